import sys
from pathlib import Path

# Let tests import harness.py and vmcore.py.
sys.path.insert(0, str(Path(__file__).resolve().parent))
