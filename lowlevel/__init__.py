"""What the CNI plugins and the daemon share: the kernel's interfaces and limits, at the lowest
level. Imports nothing of the project's and only the standard library (the CNI hot path
imports it): xtables (iptables-save/-restore, their lock, the command runner), netns
(entering a namespace), sysctl, ipnet (fast IP parsing), localnet (the loopback guard's
rules), limits (the kernel's name lengths) -- and apiobjects, the facts about Kubernetes
API objects that kube-router-cni and the daemon both read (node addresses, pod CIDRs,
Service addresses, EndpointSlice conditions)."""
