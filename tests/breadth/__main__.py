import sys

from tests.breadth.matrix import main

sys.exit(main())
