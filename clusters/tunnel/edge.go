package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"k8s.io/client-go/rest"
)

// EdgeAPI reads how to reach the edge API server from a client-go config
// (a kubeconfig's, or the in-cluster one): the host:port the agent dials,
// and the Report the hub needs to talk to the server through the tunnel
// with TLS end to end. Files (CA, token, client certificate) are read now,
// so calling it again picks up a rotated service-account token. Exec and
// auth-provider plugins are not supported: the hub cannot run them.
func EdgeAPI(cfg *rest.Config) (addr string, r Report, err error) {
	u, err := url.Parse(cfg.Host)
	if err != nil || u.Host == "" {
		return "", Report{}, fmt.Errorf("API server %q: not a URL", cfg.Host)
	}
	if u.Scheme != "https" {
		return "", Report{}, fmt.Errorf("API server %s: only https servers can be tunnelled with TLS end to end", cfg.Host)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return "", Report{}, errors.New("the kubeconfig authenticates with an exec or auth-provider plugin, which the hub cannot run: use a service-account token or a client certificate")
	}
	tls := cfg.TLSClientConfig
	if tls.Insecure {
		return "", Report{}, errors.New("the kubeconfig skips TLS verification (insecure-skip-tls-verify): the hub needs the API server's CA")
	}
	r.ServerName = tls.ServerName
	if r.ServerName == "" {
		r.ServerName = u.Hostname()
	}
	read := func(data []byte, file, what string) ([]byte, error) {
		if len(data) > 0 || file == "" {
			return data, nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		return b, nil
	}
	if r.ServerCA, err = read(tls.CAData, tls.CAFile, "the API server's CA"); err != nil {
		return "", Report{}, err
	}
	if len(r.ServerCA) == 0 {
		return "", Report{}, errors.New("the kubeconfig names no CA for the API server (certificate-authority-data): the hub needs it to verify the server end to end")
	}
	if r.ClientCert, err = read(tls.CertData, tls.CertFile, "the client certificate"); err != nil {
		return "", Report{}, err
	}
	if r.ClientKey, err = read(tls.KeyData, tls.KeyFile, "the client key"); err != nil {
		return "", Report{}, err
	}
	r.BearerToken = cfg.BearerToken
	if r.BearerToken == "" && cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return "", Report{}, fmt.Errorf("read the bearer token: %w", err)
		}
		r.BearerToken = strings.TrimSpace(string(b))
	}
	if r.BearerToken == "" && len(r.ClientCert) == 0 {
		return "", Report{}, errors.New("the kubeconfig has no credentials (a token or a client certificate) for the hub to use")
	}
	return addr, r, nil
}
