package tunnel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func TestEdgeAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("rotated-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := []byte("-----BEGIN CERTIFICATE-----\n...\n")
	for _, tc := range []struct {
		name     string
		cfg      rest.Config
		addr     string
		report   Report
		errorHas string
	}{
		{
			name: "kubeconfig with token", cfg: rest.Config{Host: "https://10.0.0.1:6443", BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAData: ca}},
			addr: "10.0.0.1:6443", report: Report{ServerCA: ca, ServerName: "10.0.0.1", BearerToken: "t"},
		},
		{
			name: "in-cluster: token file, default port, server name", cfg: rest.Config{Host: "https://10.96.0.1", BearerTokenFile: tokenFile, TLSClientConfig: rest.TLSClientConfig{CAData: ca, ServerName: "kubernetes.default.svc"}},
			addr: "10.96.0.1:443", report: Report{ServerCA: ca, ServerName: "kubernetes.default.svc", BearerToken: "rotated-token"},
		},
		{
			name: "client certificate", cfg: rest.Config{Host: "https://api.edge:6443", TLSClientConfig: rest.TLSClientConfig{CAData: ca, CertData: []byte("c"), KeyData: []byte("k")}},
			addr: "api.edge:6443", report: Report{ServerCA: ca, ServerName: "api.edge", ClientCert: []byte("c"), ClientKey: []byte("k")},
		},
		{name: "plain http", cfg: rest.Config{Host: "http://10.0.0.1:8080", BearerToken: "t"}, errorHas: "only https"},
		{name: "no CA", cfg: rest.Config{Host: "https://10.0.0.1:6443", BearerToken: "t"}, errorHas: "names no CA"},
		{name: "insecure", cfg: rest.Config{Host: "https://10.0.0.1:6443", BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}, errorHas: "insecure-skip-tls-verify"},
		{name: "no credentials", cfg: rest.Config{Host: "https://10.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, errorHas: "no credentials"},
		{name: "exec plugin", cfg: rest.Config{Host: "https://10.0.0.1:6443", ExecProvider: &clientcmdapi.ExecConfig{Command: "aws"}, TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, errorHas: "plugin"},
		{name: "missing CA file", cfg: rest.Config{Host: "https://10.0.0.1:6443", BearerToken: "t", TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(dir, "nope")}}, errorHas: "read the API server's CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, r, err := EdgeAPI(&tc.cfg)
			if tc.errorHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errorHas) {
					t.Fatalf("error %v, want one saying %q", err, tc.errorHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if addr != tc.addr || string(r.ServerCA) != string(tc.report.ServerCA) || r.ServerName != tc.report.ServerName ||
				r.BearerToken != tc.report.BearerToken || string(r.ClientCert) != string(tc.report.ClientCert) || string(r.ClientKey) != string(tc.report.ClientKey) {
				t.Errorf("got %s %+v, want %s %+v", addr, r, tc.addr, tc.report)
			}
		})
	}
}
