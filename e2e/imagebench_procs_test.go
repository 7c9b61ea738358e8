//go:build e2e && imagebench

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-mesh/outpost/e2e/netlab"
)

// ibUserHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100
// on every Linux architecture Go runs the e2e tests on).
const ibUserHZ = 100

// ibRun is what one client call took.
type ibRun struct {
	out  string
	wall time.Duration
	// cpu is the client's user + system CPU seconds (its rusage, children
	// included; `ip netns exec` execs the client, so it is one process).
	cpu float64
}

// run runs name in h's namespace, bounded by timeout and by the bench's
// context, and returns its stdout; an error carries stderr.
func (b *imageBench) run(h *netlab.Host, timeout time.Duration, name string, args ...string) (ibRun, error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	cmd := h.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := ibRun{out: stdout.String(), wall: time.Since(start)}
	if cmd.ProcessState != nil {
		r.cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return r, fmt.Errorf("%s %s on %s: %w: %s", name, strings.Join(args, " "), h.Name(), err, lastLine(stderr.String()))
	}
	return r, nil
}

// pull copies ref (host:port/repo:tag, plain HTTP) with skopeo on h into a
// dir: on the bench's tmpfs, checks that at least want bytes arrived (skopeo
// has checked every digest), and removes the copy.
func (b *imageBench) pull(h *netlab.Host, ref string, want int64) (ibRun, error) {
	dir, err := os.MkdirTemp(b.scratch, "pull-")
	if err != nil {
		return ibRun{}, err
	}
	defer os.RemoveAll(dir)
	r, err := b.run(h, ibPullTimeout, "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "docker://"+ref, "dir:"+dir)
	if err != nil {
		return r, err
	}
	got, err := ibDirBytes(dir)
	if err != nil {
		return r, err
	}
	if got < want {
		return r, fmt.Errorf("skopeo copy %s on %s wrote %d bytes; want at least %d", ref, h.Name(), got, want)
	}
	return r, nil
}

// mustPull is pull that fails the test.
func (b *imageBench) mustPull(h *netlab.Host, ref string, want int64) ibRun {
	b.t.Helper()
	r, err := b.pull(h, ref, want)
	if err != nil {
		b.t.Fatal(err)
	}
	return r
}

// push copies an OCI layout to a registry on h's loopback with skopeo;
// creds ("user:password") may be empty.
func (b *imageBench) push(h *netlab.Host, img ibImage, ref, creds string) {
	b.t.Helper()
	args := []string{"--insecure-policy", "copy", "--dest-tls-verify=false"}
	if creds != "" {
		args = append(args, "--dest-creds", creds)
	}
	if _, err := b.run(h, ibPullTimeout, "skopeo", append(args, "oci:"+img.dir+":v1", "docker://"+ref)...); err != nil {
		b.t.Fatalf("push %s: %v", ref, err)
	}
}

// get downloads url with curl on h into /dev/null over HTTP/1.1 and checks
// the status and size; the result's wall is curl's own time_total.
func (b *imageBench) get(h *netlab.Host, url, cacert string, want int64) ibRun {
	b.t.Helper()
	args := []string{"-sS", "--http1.1", "-o", "/dev/null", "--max-time", strconv.Itoa(int(ibGetTimeout.Seconds())),
		"-w", "%{http_code} %{size_download} %{time_total}"}
	if cacert != "" {
		args = append(args, "--cacert", cacert)
	}
	r, err := b.run(h, ibGetTimeout+10*time.Second, "curl", append(args, url)...)
	if err != nil {
		b.t.Fatal(err)
	}
	var code int
	var size int64
	var secs float64
	if _, err := fmt.Sscan(r.out, &code, &size, &secs); err != nil {
		b.t.Fatalf("curl %s printed %q: %v", url, r.out, err)
	}
	if code != 200 || size != want {
		b.t.Fatalf("GET %s on %s: status %d, %d bytes; want 200 and %d bytes", url, h.Name(), code, size, want)
	}
	r.wall = time.Duration(secs * float64(time.Second))
	return r
}

// ibDirBytes sums the sizes of the files in dir.
func ibDirBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	return total, err
}

// cpu returns the CPU seconds (user + system, all threads) that each
// process has used so far, from /proc/PID/stat.
func (b *imageBench) cpu(procs ...*netlab.Proc) []float64 {
	b.t.Helper()
	out := make([]float64, len(procs))
	for i, p := range procs {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
		if err != nil {
			b.t.Fatalf("cpu of %s: %v", p, err)
		}
		// The command name (field 2) is in parentheses and may hold
		// spaces; utime and stime are fields 14 and 15.
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			b.t.Fatalf("cpu of %s: short /proc stat %q", p, s)
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			b.t.Fatalf("cpu of %s: /proc stat %q", p, s)
		}
		out[i] = float64(utime+stime) / ibUserHZ
	}
	return out
}

// ibCounter counts the bytes a host sends out of eth0 from one port, with
// an iptables rule (no target: it only counts) in its namespace.
type ibCounter struct {
	b     *imageBench
	h     *netlab.Host
	proto string
	port  int
}

func (b *imageBench) newCounter(h *netlab.Host, proto string, port int) *ibCounter {
	b.t.Helper()
	out, err := h.Command(b.ctx, "iptables", "-w", "5", "-A", "OUTPUT", "-o", "eth0", "-p", proto, "--sport", strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		b.t.Fatalf("iptables on %s: %v: %s", h.Name(), err, out)
	}
	return &ibCounter{b: b, h: h, proto: proto, port: port}
}

// read returns the bytes counted so far.
func (c *ibCounter) read() int64 {
	t := c.b.t
	t.Helper()
	out, err := c.h.Command(c.b.ctx, "iptables", "-w", "5", "-L", "OUTPUT", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L on %s: %v: %s", c.h.Name(), err, out)
	}
	want := fmt.Sprintf("%s spt:%d", c.proto, c.port)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && strings.HasSuffix(strings.TrimSpace(line), want) {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("iptables counter %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no counter for %s on %s:\n%s", want, c.h.Name(), out)
	return 0
}

// ibTLS is a self-signed serving certificate and its key, as PEM files.
type ibTLS struct{ cert, key string }

// writeTLS writes a self-signed ECDSA P-256 certificate for ip into dir.
func (b *imageBench) writeTLS(dir, ip string) ibTLS {
	b.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imagebench distribution"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP(ip)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		b.t.Fatal(err)
	}
	c := ibTLS{cert: filepath.Join(dir, "dist.crt"), key: filepath.Join(dir, "dist.key")}
	if err := os.WriteFile(c.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(c.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		b.t.Fatal(err)
	}
	return c
}

// distribution starts CNCF Distribution (Debian's docker-registry) on h,
// listening on addr, its storage in storage (several instances may share
// one), over TLS when tls is set, configured as Debian ships it (the
// in-memory blob descriptor cache) without auth, and waits until it
// answers /v2/.
func (b *imageBench) distribution(h *netlab.Host, name, addr, storage string, tls *ibTLS) *netlab.Proc {
	b.t.Helper()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: imagebench
`, storage, addr)
	url, cacert := "http://"+addr+"/v2/", ""
	if tls != nil {
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", tls.cert, tls.key)
		url, cacert = "https://"+addr+"/v2/", tls.cert
	}
	path := filepath.Join(b.m.dir, name+".yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.t.Fatal(err)
	}
	p := h.Start("docker-registry", "serve", path)
	b.m.eventually(30*time.Second, name+" answers on "+addr, func() error {
		if !p.Running() {
			b.t.Fatalf("%s exited: %v\n%s", name, p.Wait(), p.Tail(20))
		}
		args := []string{"-sS", "-o", "/dev/null", "--max-time", "2", "-w", "%{http_code}"}
		if cacert != "" {
			args = append(args, "--cacert", cacert)
		}
		r, err := b.run(h, 5*time.Second, "curl", append(args, url)...)
		if err != nil {
			return err
		}
		if r.out != "200" {
			return fmt.Errorf("GET %s: %s", url, r.out)
		}
		return nil
	})
	return p
}

// ibLoadavg is the 1-minute load average.
func ibLoadavg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	v, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return v
}
