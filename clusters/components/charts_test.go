package components

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// TestPushChartArchive: a packaged chart (.tgz, as `helm pull` or `helm
// package` writes it) is pushed as a directory is, to
// REGISTRY/charts/NAME:VERSION, and the hub loads it from there; a
// refused push is ErrPush, a file that is no chart is not.
func TestPushChartArchive(t *testing.T) {
	setup(t)
	ch, err := loader.Load(filepath.Join("testdata", "charts", "testruntime"))
	if err != nil {
		t.Fatal(err)
	}
	ch.Metadata.Version = "0.2.0"
	tgz, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := PushChart(hubReg.pushConfig(), ChartsRepository, tgz)
	if err != nil {
		t.Fatalf("push %s: %v", filepath.Base(tgz), err)
	}
	if want := hubReg.addr + "/charts/testruntime:0.2.0"; ref != want {
		t.Errorf("pushed as %s, want %s", ref, want)
	}
	charts, err := NewOCICharts(OCIChartsConfig{Host: hubReg.addr, PlainHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := charts.Load("charts/testruntime", "0.2.0")
	if err != nil {
		t.Fatalf("load the pushed archive: %v", err)
	}
	if got.Metadata.Name != "testruntime" || got.Metadata.Version != "0.2.0" || len(got.Templates) == 0 {
		t.Errorf("loaded %s %s with %d templates", got.Metadata.Name, got.Metadata.Version, len(got.Templates))
	}

	bad := hubReg.pushConfig()
	bad.Password = "not-the-token"
	if _, err := PushChart(bad, ChartsRepository, tgz); !errors.Is(err, ErrPush) {
		t.Errorf("push with a wrong token: %v, want ErrPush", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.tgz")
	if err := os.WriteFile(junk, []byte("not a chart"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := PushChart(hubReg.pushConfig(), ChartsRepository, junk); err == nil || errors.Is(err, ErrPush) {
		t.Errorf("push of a file that is no chart: %v, want a load error", err)
	}
}
