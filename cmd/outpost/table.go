package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tablePrinter prints server-side tables aligned as kubectl prints them.
type tablePrinter struct {
	w          *tabwriter.Writer
	wide       bool
	namespaces bool
	labels     bool
	header     bool
	// color wraps the cells of state columns (Phase, State, Ready, ...)
	// in ANSI colours; set it only for a terminal (colorOutput).
	color bool
	// colored marks the state columns, by index into the table's columns;
	// kept from the first table, as later watch events carry no columns.
	colored map[int]bool
	// show marks the columns printed (priority 0, or every one with
	// wide); kept from the first table as colored is.
	show []bool
}

func newTablePrinter(out io.Writer, wide, namespaces bool) *tablePrinter {
	return &tablePrinter{w: tabwriter.NewWriter(out, 6, 4, 3, ' ', 0), wide: wide, namespaces: namespaces}
}

// print writes t's rows, and its header the first time.
func (p *tablePrinter) print(t *metav1.Table) {
	if len(t.ColumnDefinitions) == 0 && !p.header {
		return
	}
	if p.show == nil && len(t.ColumnDefinitions) > 0 {
		p.show = make([]bool, len(t.ColumnDefinitions))
		for i, c := range t.ColumnDefinitions {
			p.show[i] = c.Priority == 0 || p.wide
		}
	}
	show := p.show
	if p.color && p.colored == nil && len(t.ColumnDefinitions) > 0 {
		p.colored = map[int]bool{}
		for i, c := range t.ColumnDefinitions {
			p.colored[i] = stateColumn(c.Name)
		}
	}
	if !p.header && len(t.ColumnDefinitions) > 0 {
		var cols []string
		if p.namespaces {
			cols = append(cols, "NAMESPACE")
		}
		for i, c := range t.ColumnDefinitions {
			if !show[i] {
				continue
			}
			if p.colored[i] {
				// The same invisible bytes as the cells below, so
				// tabwriter's widths agree.
				cols = append(cols, ansiPlain+strings.ToUpper(c.Name)+ansiPlain)
				continue
			}
			cols = append(cols, strings.ToUpper(c.Name))
		}
		if p.labels {
			cols = append(cols, "LABELS")
		}
		fmt.Fprintln(p.w, strings.Join(cols, "\t"))
		p.header = true
	}
	for _, row := range t.Rows {
		var cells []string
		var meta metav1.PartialObjectMetadata
		_ = json.Unmarshal(row.Object.Raw, &meta)
		if p.namespaces {
			cells = append(cells, meta.Namespace)
		}
		for i, v := range row.Cells {
			if i < len(show) && !show[i] {
				continue
			}
			cell := cellString(v)
			if p.colored[i] {
				cell = stateColor(cell) + cell + ansiPlain
			}
			cells = append(cells, cell)
		}
		if p.labels {
			cells = append(cells, labelString(meta.Labels))
		}
		fmt.Fprintln(p.w, strings.Join(cells, "\t"))
	}
}

func (p *tablePrinter) flush() error { return p.w.Flush() }

func cellString(v any) string {
	switch x := v.(type) {
	case nil:
		return "<none>"
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprint(int64(x))
		}
		return fmt.Sprint(x)
	case string:
		if x == "" {
			return "<none>"
		}
		return x
	default:
		return fmt.Sprint(x)
	}
}

// labelString prints labels as kubectl does: k=v,k=v sorted, or <none>.
func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}
