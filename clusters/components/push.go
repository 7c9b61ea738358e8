package components

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// ErrPush marks a push that the registry refused or did not answer, as
// opposed to a chart that does not load.
var ErrPush = errors.New("push failed")

// ChartsRepository is where charts go in the hub's registry: a chart
// named NAME at version V is REGISTRY/charts/NAME:V, the repository the
// components' defaults name.
const ChartsRepository = "charts"

// PushChart packages the chart at src (a chart directory or a .tgz) and
// pushes it to the registry of cfg under repo (ChartsRepository) as
// NAME:VERSION, with Helm's registry client. It returns the reference.
func PushChart(cfg OCIChartsConfig, repo, src string) (string, error) {
	if cfg.Host == "" || strings.Contains(cfg.Host, "/") {
		return "", fmt.Errorf("registry %q must be host:port", cfg.Host)
	}
	ch, err := loader.Load(src)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", src, err)
	}
	return pushChart(cfg, repo, src, ch)
}

// pushChart packages ch (loaded from src) and pushes it.
func pushChart(cfg OCIChartsConfig, repo, src string, ch *chart.Chart) (string, error) {
	if err := ch.Validate(); err != nil {
		return "", fmt.Errorf("chart %s: %w", src, err)
	}
	tmp, err := os.MkdirTemp("", "outpost-chart-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	tgz, err := chartutil.Save(ch, tmp)
	if err != nil {
		return "", fmt.Errorf("package chart %s: %w", src, err)
	}
	data, err := os.ReadFile(tgz)
	if err != nil {
		return "", err
	}
	client, err := newRegistryClient(cfg)
	if err != nil {
		return "", err
	}
	ref := cfg.Host + "/" + path.Join(repo, ch.Metadata.Name) + ":" + ch.Metadata.Version
	if _, err := client.Push(data, ref); err != nil {
		return "", fmt.Errorf("%w: oci://%s: %w", ErrPush, ref, err)
	}
	return ref, nil
}
