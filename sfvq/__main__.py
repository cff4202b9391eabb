"""``python -m sfvq``: the command line, as torchrun starts it (``torchrun ... -m sfvq -- fit ...``).

The package's entry point, a front end like ``sfvq/cli`` (the library never imports it).
"""

from sfvq.cli import main

main(prog_name="sfvq")
