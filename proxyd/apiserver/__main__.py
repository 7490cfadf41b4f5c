import sys

from proxyd.apiserver.server import main

sys.exit(main())
