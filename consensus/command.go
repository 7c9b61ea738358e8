package consensus

import (
	"encoding/json"
	"fmt"
	"time"
)

// commandVersion is the format version of commands written to the Raft log.
// An FSM refuses a command of a newer version than it knows, so a mixed-
// version group fails loudly instead of diverging.
const commandVersion = 1

// op is what a command does to an object.
type op string

const (
	opCreate op = "create" // fails if the object exists
	opUpdate op = "update" // replaces metadata and spec; keeps status
	opStatus op = "status" // replaces status; keeps metadata and spec
	opDelete op = "delete" // sets deletionTimestamp while finalizers remain, else removes
)

// command is one replicated mutation. The proposer fills every value that is
// not a pure function of the stored state (uid, clock), so applying it is
// deterministic on every replica.
type command struct {
	V   int     `json:"v"`
	Op  op      `json:"op"`
	Key string  `json:"key"`
	Obj *Object `json:"obj,omitempty"`
	// Group, Resource and Name describe the object in error messages.
	Group    string `json:"group"`
	Resource string `json:"resource"`
	Name     string `json:"name"`
	// WithStatus makes an update replace the status too, in the same
	// write (controllers that own both).
	WithStatus bool `json:"withStatus,omitempty"`
	// ExpectRV, when not zero, must equal the stored object's resourceVersion.
	ExpectRV uint64 `json:"expectRV,omitempty"`
	// ExpectUID, when set, must equal the stored object's uid.
	ExpectUID string `json:"expectUID,omitempty"`
	// Now is the proposer's clock, used for timestamps.
	Now time.Time `json:"now"`
}

func encodeCommand(c *command) ([]byte, error) {
	c.V = commandVersion
	return json.Marshal(c)
}

func decodeCommand(b []byte) (*command, error) {
	var c command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	if c.V < 1 || c.V > commandVersion {
		return nil, fmt.Errorf("decode command: version %d not supported (this node knows up to %d); upgrade it", c.V, commandVersion)
	}
	return &c, nil
}

// objectKey is the store key of an object: group/kind/namespace/name.
func objectKey(k *Kind, namespace, name string) string {
	return k.Group + "/" + k.Kind + "/" + namespace + "/" + name
}

// kindPrefix is the key prefix of every object of k in namespace, or of
// every namespace when namespace is empty and k is namespaced.
func kindPrefix(k *Kind, namespace string) string {
	p := k.Group + "/" + k.Kind + "/"
	if namespace != "" || !k.Namespaced {
		p += namespace + "/"
	}
	return p
}
