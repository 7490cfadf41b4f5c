# The two commands a newcomer needs (run as root on Debian 12):
#   make demo   set everything up, then run the live demo
#   make test   set everything up, then run the whole test suite (unit, netns, kernel tiers)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the project and its tests use:
#   iproute2 iptables ipset ipvsadm conntrack kmod  the kernel tools the daemon and plugins drive
#   qemu-system-x86 linux-image-amd64 busybox-static cpio  the VM runner for the kernel tier
#   containernetworking-plugins  the reference CNI plugins (parity tests, loopback, benchmarks)
#   podman runc                  a real CNI consumer (libcni) that drives our plugins in the netns tier
#   containerd runc              containerd's CRI, the path kubelet takes to our plugins (netns tier)
#   python3-venv                 the virtualenv everything is installed into
#   gobgpd                       GoBGP, the BGP engine the router drives over gRPC (as kube-router embeds it)
#   golang-github-osrg-gobgp-dev GoBGP's .proto files, the source of proxyd/routing/gobgp_api
#   bird2                        an independent BGP peer for the BGP engine's netns tests
#   kubernetes-client            kubectl, for the embedded API server's tests; left out when a
#                                kubectl is already installed (a package that owns
#                                /usr/bin/kubectl, e.g. the cloud SDK's, makes it uninstallable)
APT_PACKAGES := iproute2 iptables ipset ipvsadm conntrack kmod procps \
	qemu-system-x86 linux-image-amd64 busybox-static cpio \
	containernetworking-plugins podman containerd runc python3 python3-venv \
	gobgpd golang-github-osrg-gobgp-dev bird2 \
	$(if $(shell command -v kubectl),,kubernetes-client)
STAMP := $(VENV)/.installed

.PHONY: demo test setup apt
demo: setup
	$(VENV)/bin/kube-router-sim demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: apt $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive INITRD=No \
			apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): setup.cfg pyproject.toml
	[ -x $(PY) ] || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@
