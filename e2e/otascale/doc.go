// Command otascale is the OTA scale benchmark behind `make bench-ota`: a
// hub, 100 sites and 10,000 nodes on one machine, running real tasks.
//
//	otascale run [-sites 100] [-per-site 100] [-procs 10] [-outpost bin/outpost] [-settle 90s] [-settle-max 5m] [-gomaxprocs 1] [-profiles DIR]
//
// run makes a network namespace of its own (the whole fleet talks over that
// namespace's loopback, 127.0.0.0/8, each node at an address of its own),
// starts a hub and one `outpost node` per site as the site's leader, then
// hosts the remaining nodes of every site as stateless members
// (node.Agent), many to a process: each has its own identity (it joins with
// its site's token), its own QUIC endpoint and gossip membership, and runs
// the real agent code; the members of one process share one Badger for
// their journals, keyed by node. It then runs three tasks through the hub's
// API and prints a Markdown table: a read of a small file and an exec of
// `true` on every node, timed from the apply to the task's completion, and
// a 10 MiB contentFrom write to 10 nodes in each of 10 sites, with the bytes the
// hub's QUIC port sent while it ran (an iptables counter in the namespace).
// Each task's line also gives when its devices started and completed, and
// the UDP datagrams the fleet sent per device on its QUIC and gossip ports
// with the kernel's receive-buffer drops (a starved fleet sends more).
// Memory is each process's peak resident set (VmHWM) and, for the hub and
// the leaders, the peak of its own part (RssAnon, sampled each second:
// VmHWM also counts the binary's pages, which the kernel shares between
// the hundred leaders). The site leaders and
// simulators run with GOMAXPROCS 1 (-gomaxprocs): each stands for a host of
// its own, and a hundred Go schedulers each spinning on both cores for work
// would cost more than the work.
//
//	otascale sim -hub ADDR -tokens FILE -sites s001,s002 -per-site 99 -dir DIR
//
// sim is run by run: it joins and serves the stateless members of the given
// sites, prints "ready" once all of them run, and stops on SIGTERM.
package main
