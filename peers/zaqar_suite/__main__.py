import sys

from peers.zaqar_suite.run import main

sys.exit(main())
