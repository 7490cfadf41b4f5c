"""``kube-router --cleanup-config``: remove everything this build puts into the kernel, then exit.

What is removed is exactly what the controllers' appliers own (their names
module predicates); every other program's chains, rules and sets stay as
they are. Both IP families are cleaned whatever --enable-ipv6 says: a node
may have run with another setting before.
"""
from __future__ import annotations

import logging

from proxyd.config import Config
from proxyd.controllers import REGISTRY

log = logging.getLogger(__name__)

# Each takes the Config: the proxy's ownership of IPVS services follows the flags' ranges.
CLEANERS = {row.title: row.clean for row in REGISTRY if row.cleanup}


def cleanup(config: Config, cleaners=CLEANERS) -> int:
    logging.basicConfig(level=logging.DEBUG if config.v >= 2 else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed = []
    for what, clean in cleaners.items():
        try:
            removed = clean(config)
            log.info("cleanup: %s: removed %s", what, ", ".join(removed) or "nothing (none found)")
        except Exception as e:  # one part failing must not keep the others in place
            log.error("cleanup: %s failed: %s", what, e)
            failed.append(what)
    return 1 if failed else 0
