// Command outpost is Outpost's one binary: the daemon that runs on every
// edge host (`outpost node`) and the operator's command-line client (get,
// apply, delete, describe, status, token, task, version).
package main
