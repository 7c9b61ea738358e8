package control

import (
	"github.com/outpost-mesh/outpost/ota"
	"github.com/outpost-mesh/outpost/ota/grant"
)

// Assignment is the hub's order to one site: run a task on these devices.
// The spec crosses the WAN once per site: the hub sends it until the site
// reports it has the assignment at this version, and later versions (halt,
// resume, cancel) travel without it.
type Assignment struct {
	Task    string        `json:"task"`
	UID     string        `json:"uid"`
	Attempt int           `json:"attempt"`
	Version int           `json:"version"`
	Spec    *ota.TaskSpec `json:"spec,omitempty"`
	// Devices are the nodes of this site the task targets.
	Devices []string `json:"devices,omitempty"`
	// Retry lists devices to run again at Attempt (spec.retry).
	Retry []string `json:"retry,omitempty"`
	// Window is how many of the site's devices may run at once.
	Window   int  `json:"window"`
	Halted   bool `json:"halted,omitempty"`
	Canceled bool `json:"canceled,omitempty"`
	// Grants are the hub's signed permissions to run each device (of
	// Devices, or of Retry at Attempt); the site stores and forwards them
	// untouched and the node's agent refuses a run without one.
	Grants []grant.Grant `json:"grants,omitempty"`
}

// grantFor returns the grant of node at attempt, nil when there is none.
func (a *Assignment) grantFor(node string, attempt int) *grant.Grant {
	for i := range a.Grants {
		if g := &a.Grants[i]; g.Node == node && g.Attempt == attempt {
			return g
		}
	}
	return nil
}

// mergeGrants keeps one grant per node: the newer attempt's.
func mergeGrants(old, add []grant.Grant) []grant.Grant {
	byNode := map[string]int{}
	out := append([]grant.Grant(nil), old...)
	for i, g := range out {
		byNode[g.Node] = i
	}
	for _, g := range add {
		if i, ok := byNode[g.Node]; ok {
			if g.Attempt >= out[i].Attempt {
				out[i] = g
			}
			continue
		}
		byNode[g.Node] = len(out)
		out = append(out, g)
	}
	return out
}

// DeviceReport carries one device's result (or a change of its phase) from
// a site to the hub.
type DeviceReport struct {
	Task    string                 `json:"task"`
	UID     string                 `json:"uid"`
	Attempt int                    `json:"attempt"`
	Node    string                 `json:"node"`
	Status  ota.DeviceResultStatus `json:"status"`
}

// Acks are the hub's acknowledgements of a site's reports: each names the
// device, attempt and phase the hub holds, all Site.Acked reads of one,
// not the whole result again (which doubled a link's bytes and made the
// site leader decode its own results).
func Acks(reports []DeviceReport) []DeviceReport {
	out := make([]DeviceReport, len(reports))
	for i, r := range reports {
		out[i] = DeviceReport{Task: r.Task, UID: r.UID, Attempt: r.Attempt, Node: r.Node, Status: ota.DeviceResultStatus{Phase: r.Status.Phase}}
	}
	return out
}

// RunRequest is what a site leader sends a node agent to run one device.
type RunRequest struct {
	Task          string     `json:"task"`
	UID           string     `json:"uid"`
	Attempt       int        `json:"attempt"`
	Node          string     `json:"node"`
	Site          string     `json:"site"`
	Steps         []ota.Step `json:"steps"`
	DeviceTimeout int64      `json:"deviceTimeoutMillis"`
	// Grant is the hub's signed permission for this run, as the hub sent
	// it.
	Grant *grant.Grant `json:"grant,omitempty"`
}

// SiteState is what a site tells the hub it holds: the version of each
// assignment by task UID.
type SiteState map[string]int
