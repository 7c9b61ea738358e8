package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/outpost-mesh/outpost/ota"
)

// recapFile is the JSON the callback writes: ansible.posix json's shape.
type recapFile struct {
	Plays []struct {
		Play struct {
			Name string `json:"name"`
		} `json:"play"`
		Tasks []struct {
			Task struct {
				Name string `json:"name"`
			} `json:"task"`
			Hosts map[string]hostOutcome `json:"hosts"`
		} `json:"tasks"`
	} `json:"plays"`
	Stats map[string]struct {
		OK          int `json:"ok"`
		Changed     int `json:"changed"`
		Failures    int `json:"failures"`
		Unreachable int `json:"unreachable"`
		Skipped     int `json:"skipped"`
		Rescued     int `json:"rescued"`
		Ignored     int `json:"ignored"`
	} `json:"stats"`
}

// hostOutcome is one task's outcome on one host.
type hostOutcome struct {
	Changed      bool   `json:"changed"`
	Failed       bool   `json:"failed"`
	IgnoreErrors bool   `json:"ignore_errors"`
	Rescued      bool   `json:"rescued"`
	Unreachable  bool   `json:"unreachable"`
	Skipped      bool   `json:"skipped"`
	Msg          string `json:"msg"`
}

// parsedRecap is a playbook's result and, when a host failed, a message
// naming the first failed task.
type parsedRecap struct {
	result ota.PlaybookResult
	failed string
}

// readRecap reads and parses the callback's file.
func readRecap(path string) (*parsedRecap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseRecap(data)
}

// parseRecap turns the callback's JSON into per-host and per-play recaps,
// counting as Ansible does: OK includes changed tasks and ignored failures,
// Changed only counts tasks that did not fail (or failed ignored).
func parseRecap(data []byte) (*parsedRecap, error) {
	var f recapFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse recap: %w", err)
	}
	var out parsedRecap
	for _, host := range slices.Sorted(maps.Keys(f.Stats)) {
		s := f.Stats[host]
		out.result.Recap = append(out.result.Recap, ota.PlayRecap{
			Host: host, OK: s.OK, Changed: s.Changed, Failed: s.Failures,
			Unreachable: s.Unreachable, Skipped: s.Skipped, Rescued: s.Rescued, Ignored: s.Ignored,
		})
		if s.Failures > 0 || s.Unreachable > 0 {
			out.failed = fmt.Sprintf("%s: %d failed, %d unreachable", host, s.Failures, s.Unreachable)
		}
	}
	firstFailure := ""
	for _, p := range f.Plays {
		byHost := map[string]*ota.PlayRecap{}
		for _, t := range p.Tasks {
			for host, o := range t.Hosts {
				r := byHost[host]
				if r == nil {
					r = &ota.PlayRecap{Play: p.Play.Name, Host: host}
					byHost[host] = r
				}
				switch {
				case o.Unreachable:
					r.Unreachable++
				case o.Skipped:
					r.Skipped++
				case o.Failed && o.IgnoreErrors:
					r.OK++
					r.Ignored++
					if o.Changed {
						r.Changed++
					}
				case o.Failed && o.Rescued:
					r.Rescued++
				case o.Failed:
					r.Failed++
				default:
					r.OK++
					if o.Changed {
						r.Changed++
					}
				}
				if (o.Failed && !o.IgnoreErrors && !o.Rescued || o.Unreachable) && firstFailure == "" {
					firstFailure = fmt.Sprintf("play %q, task %q on %s: %s", p.Play.Name, t.Task.Name, host, o.Msg)
				}
			}
		}
		for _, host := range slices.Sorted(maps.Keys(byHost)) {
			out.result.Plays = append(out.result.Plays, *byHost[host])
		}
	}
	if out.failed != "" && firstFailure != "" {
		out.failed = firstFailure
	}
	return &out, nil
}
