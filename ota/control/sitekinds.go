package control

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/outpost-mesh/outpost/consensus"
	"github.com/outpost-mesh/outpost/ota"
)

// SiteTaskSpec is an assignment as a site records it in its Raft group.
type SiteTaskSpec struct {
	Assignment Assignment `json:"assignment"`
	// Started are the devices that started when the site took the
	// assignment (within its window, node alive). Such a device has no
	// DeviceRun until its first write after that (its result, TimedOut,
	// Canceled, a retry): the SiteTask records its start, which saves a
	// Raft write per device, half of a site leader's writes in a fast
	// task.
	Started *StartedRuns `json:"started,omitempty"`
}

// StartedRuns are devices that started together with their assignment.
type StartedRuns struct {
	Devices []string    `json:"devices"`
	Attempt int         `json:"attempt"`
	Time    metav1.Time `json:"time"`
}

// DeviceRunStatus is a device's progress at its site.
type DeviceRunStatus struct {
	Result ota.DeviceResultStatus `json:"result"`
	// Reported is the phase the hub has acknowledged.
	Reported ota.DevicePhase `json:"reported,omitempty"`
}

// DeviceRunSpec names a device of an assignment.
type DeviceRunSpec struct {
	Task    string `json:"task"`
	UID     string `json:"uid"`
	Attempt int    `json:"attempt"`
	Node    string `json:"node"`
}

// labelUID marks a DeviceRun with its task's UID.
const labelUID = ota.Group + "/uid"

// Kinds kept in a site's group; hidden from the admin API.
var (
	SiteTaskKind = consensus.Kind{
		Group: ota.Group, Version: ota.Version, Kind: "SiteTask", Plural: "sitetasks", Hidden: true,
		NewSpec: func() any { return &SiteTaskSpec{} },
	}
	DeviceRunKind = consensus.Kind{
		Group: ota.Group, Version: ota.Version, Kind: "DeviceRun", Plural: "deviceruns", Hidden: true,
		NewSpec: func() any { return &DeviceRunSpec{} }, NewStatus: func() any { return &DeviceRunStatus{} },
	}
)

// Register adds the site kinds to r.
func Register(r *consensus.Registry) error {
	for _, k := range []consensus.Kind{SiteTaskKind, DeviceRunKind} {
		if err := r.Register(k); err != nil {
			return err
		}
	}
	return nil
}
