"""``python -m trickbag``: the command line (also ``torchrun -m trickbag train ...``)."""

from trickbag.cli import main

main()
