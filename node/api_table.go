package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/util/jsonpath"

	"github.com/outpost-mesh/outpost/consensus"
)

// wantsTable reports whether the client asked for server-side printing, as
// kubectl and the outpost CLI do.
func wantsTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") {
			return true
		}
	}
	return false
}

// tableConvertor renders objects as a metav1.Table from their kind's
// printer columns: NAME, the columns, AGE.
type tableConvertor struct {
	mu    sync.Mutex
	paths map[string]*jsonpath.JSONPath
}

func newTableConvertor() *tableConvertor {
	return &tableConvertor{paths: map[string]*jsonpath.JSONPath{}}
}

func (t *tableConvertor) path(expr string) *jsonpath.JSONPath {
	t.mu.Lock()
	defer t.mu.Unlock()
	if jp, ok := t.paths[expr]; ok {
		return jp
	}
	jp := jsonpath.New(expr).AllowMissingKeys(true)
	if err := jp.Parse("{" + expr + "}"); err != nil {
		jp = nil
	}
	t.paths[expr] = jp
	return jp
}

func (t *tableConvertor) convert(k *consensus.Kind, objs []*consensus.Object, rv uint64, r *http.Request) *metav1.Table {
	tbl := &metav1.Table{
		TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "Table"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatUint(rv, 10)},
	}
	tbl.ColumnDefinitions = append(tbl.ColumnDefinitions, metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: "metadata.name"})
	for _, c := range k.Columns {
		tbl.ColumnDefinitions = append(tbl.ColumnDefinitions, metav1.TableColumnDefinition{
			Name: c.Name, Type: tableType(c.Type), Priority: c.Priority, Description: c.Description,
		})
	}
	tbl.ColumnDefinitions = append(tbl.ColumnDefinitions, metav1.TableColumnDefinition{Name: "Age", Type: "date", Description: "metadata.creationTimestamp"})
	includeObject := r.URL.Query().Get("includeObject")
	now := time.Now()
	for _, o := range objs {
		row := metav1.TableRow{Cells: []any{o.Name}}
		var data any
		raw, _ := json.Marshal(o)
		_ = json.Unmarshal(raw, &data)
		for _, c := range k.Columns {
			row.Cells = append(row.Cells, t.cell(c, data, now))
		}
		row.Cells = append(row.Cells, age(o.CreationTimestamp.Time, now))
		switch includeObject {
		case "None":
		case "Object":
			row.Object = runtime.RawExtension{Raw: raw}
		default:
			meta := metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"},
				ObjectMeta: o.ObjectMeta,
			}
			b, _ := json.Marshal(meta)
			row.Object = runtime.RawExtension{Raw: b}
		}
		tbl.Rows = append(tbl.Rows, row)
	}
	return tbl
}

// cell evaluates one column for one object; missing values print as
// Kubernetes prints them, as <none> for strings and empty otherwise.
func (t *tableConvertor) cell(c consensus.Column, data any, now time.Time) any {
	jp := t.path(c.JSONPath)
	if jp == nil {
		return "<invalid>"
	}
	results, err := jp.FindResults(data)
	if err != nil || len(results) == 0 || len(results[0]) == 0 {
		if c.Type == "string" {
			return "<none>"
		}
		return nil
	}
	v := results[0][0].Interface()
	if c.Type == "date" {
		if s, ok := v.(string); ok {
			if ts, err := time.Parse(time.RFC3339, s); err == nil {
				return age(ts, now)
			}
		}
	}
	if c.Type == "integer" {
		if f, ok := v.(float64); ok {
			return int64(f)
		}
	}
	if c.Type == "string" {
		return fmt.Sprint(v)
	}
	return v
}

func tableType(t string) string {
	if t == "" {
		return "string"
	}
	return t
}

// age prints how long ago ts was, as kubectl does; <unknown> for zero.
func age(ts, now time.Time) string {
	if ts.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(ts))
}
