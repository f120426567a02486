import sys
from pathlib import Path

# Let ``import golden`` work from any test module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
