package components

import (
	"embed"
	"fmt"
	"io/fs"
	"path"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// CoreChartsVersion is the version of the project's own charts (charts/
// in this package), which the core components default to.
const CoreChartsVersion = "0.1.0"

// coreCharts are the project's own charts, built into the binary so that
// `outpost charts push` with no argument mirrors them into the hub's
// registry, as an operator mirrors an upstream runtime's chart.
//
//go:embed all:charts
var coreCharts embed.FS

// PushCoreCharts pushes the project's own charts (outpost-agent,
// outpost-node) to the registry of cfg under repo, as PushChart does,
// and returns their references.
func PushCoreCharts(cfg OCIChartsConfig, repo string) ([]string, error) {
	names, err := fs.ReadDir(coreCharts, "charts")
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, n := range names {
		ch, err := loadCoreChart(n.Name())
		if err != nil {
			return refs, err
		}
		ref, err := pushChart(cfg, repo, "built-in chart "+n.Name(), ch)
		if err != nil {
			return refs, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// loadCoreChart loads the built-in chart name.
func loadCoreChart(name string) (*chart.Chart, error) {
	root := path.Join("charts", name)
	var files []*loader.BufferedFile
	err := fs.WalkDir(coreCharts, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := coreCharts.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: p[len(root)+1:], Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("built-in chart %s: %w", name, err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("built-in chart %s: %w", name, err)
	}
	return ch, nil
}
