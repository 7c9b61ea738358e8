// Command tunnelbench measures Outpost's reverse tunnel (clusters/tunnel
// over transport's QUIC) against direct TCP and two peer tunnels on the
// same path: OpenSSH reverse forwarding (`ssh -R`, Debian's
// openssh-server and openssh-client) and rancher/remotedialer (the library
// behind Rancher's cluster agent, built from ./remotedialer, a module of its
// own that needs GOTOOLCHAIN=go1.27.3).
//
// Each tunnel carries TCP connections from a client on the hub side to a
// backend on the edge side, on loopback and across a 100 Mbit/s tbf link
// between two network namespaces the program creates and deletes. It
// measures a bulk download (MB/s with CPU-seconds per GiB of the tunnel's
// processes and of everything), 64-byte request round trips (p50/p99), and
// many concurrent streams with one client that never reads (the others'
// rates with and without it). Every measurement is bounded by -secs. It
// prints markdown tables.
//
//	sudo go run ./e2e/tunnelbench                    # everything (root: namespaces, sshd)
//	go run ./e2e/tunnelbench -paths loopback -tunnels direct,outpost
//
// The subcommands backend, client, hub, agent and kube are the processes it
// starts; they are not meant to be run by hand. With
// TUNNELBENCH_CPUPROFILE_DIR set, hub and agent write CPU profiles there.
package main
