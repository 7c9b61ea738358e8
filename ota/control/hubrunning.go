package control

import (
	"maps"

	"github.com/outpost-mesh/outpost/ota"
)

// SiteRunning records what a site's report counts of its running devices:
// by task UID, how many run there that the site has not reported one by
// one (Site.Running; the hub holds their DeviceResults Queued). Each report
// replaces the site's counts; counts of tasks this leader does not run are
// dropped, so a site cannot make the hub keep more than its tasks. A change
// wakes a pass, which shows it in the task's counts (withRunning).
func (h *Hub) SiteRunning(site string, counts map[string]int) {
	h.mu.Lock()
	keep := map[string]int{}
	for uid, n := range counts {
		if _, ok := h.tasks[uid]; ok && n > 0 {
			keep[uid] = n
		}
	}
	if maps.Equal(h.running[site], keep) {
		h.mu.Unlock()
		return
	}
	if h.running == nil {
		h.running = map[string]map[string]int{}
	}
	if len(keep) == 0 {
		delete(h.running, site)
	} else {
		h.running[site] = keep
	}
	h.mu.Unlock()
	h.wake()
}

// withRunning moves the devices of task uid that their sites count as
// running from Queued to Running in counts and sites (a copy the caller
// owns), each site's at most its Queued ones: a device the hub already
// holds Running or finished is counted by its DeviceResult.
func (h *Hub) withRunning(uid string, counts ota.Counts, sites map[string]ota.Counts) ota.Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	for site, byTask := range h.running {
		c, ok := sites[site]
		n := min(byTask[uid], c.Queued)
		if !ok || n <= 0 {
			continue
		}
		c.Queued, c.Running = c.Queued-n, c.Running+n
		sites[site] = c
		counts.Queued, counts.Running = counts.Queued-n, counts.Running+n
	}
	return counts
}
