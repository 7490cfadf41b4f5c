import sys

from krsim.apiserver.server import main

sys.exit(main())
