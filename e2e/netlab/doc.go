// Package netlab builds a small network of hosts out of Linux network
// namespaces for multi-host tests of real processes.
//
// A Lab is one switch, a Linux bridge inside a namespace of its own, and the
// hosts plugged into it: each Host is a namespace with a veth pair whose eth0
// end carries the host's address in 10.213.X.0/24. Nothing is added to the
// root namespace: no address, no route, no interface. Lab namespaces get no
// default route, so a process in the lab can reach only the lab.
//
// Tests run every process, the test's own client included, inside the lab
// with Host.Command or Host.Start. Links are cut with Host.Cut, single peers
// dropped with Host.Block (iptables in the host's namespace), and bandwidth
// capped with Host.LimitRate (a tbf qdisc on eth0).
//
// New registers a cleanup that kills the lab's processes, prints the tail of
// their logs if the test failed, and deletes the namespaces. A lab left
// behind by a crashed run (its owner's lock file is no longer locked) is
// deleted by the next New.
//
// Everything needs root and iproute2's `ip`; New skips the test otherwise.
// Block needs iptables and LimitRate needs tc.
package netlab
