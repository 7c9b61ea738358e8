// Command rdpeer runs rancher/remotedialer, the reverse tunnel behind
// Rancher's cluster agent, as tunnelbench's peer: `rdpeer server` on the hub
// side accepts the agent's websocket and a TCP port whose connections it
// dials through the tunnel; `rdpeer client` on the edge side connects and
// dials what the server asks for. It is a module of its own because
// remotedialer needs a newer Go than Outpost's (build it with
// GOTOOLCHAIN=go1.27.3).
package main
