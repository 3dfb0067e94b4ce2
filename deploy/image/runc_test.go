package image_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/controlplane"
	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// runcBin finds runc; `make runc` installs it from Debian's packages. Its absence fails the
// test: the image test is part of `make test` and must not pass without running the image.
func runcBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runc not found (%v): run `make runc` (apt-get install runc), or `make image-test`, which does", err)
	}
	return p
}

// unpack writes the image's filesystem into dir.
func unpack(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("unpacking the image: %v", err)
		}
		p := filepath.Join(dir, filepath.FromSlash(filepath.Clean("/"+h.Name)))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unpacking the image: %s has type %q, which this test does not expect", h.Name, h.Typeflag)
		}
	}
}

// container runs one process of the image under runc, as a Kubernetes pod with the Deployment's
// securityContext would: the image's user, a read-only root, no capabilities, no new privileges.
// It shares the host's network namespace, so it reaches the kube-apiserver on loopback and the
// test reaches it.
type container struct {
	t      *testing.T
	runc   string
	state  string // runc --root
	id     string
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
	killed bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bundle writes an OCI bundle (config.json from `runc spec`, adapted) whose root is rootfs.
func bundle(t *testing.T, runc, rootfs string, cfg *v1.Config, args []string, binds map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("runc spec's config.json: %v", err)
	}
	uid, gid, err := numericUser(cfg.User)
	if err != nil {
		t.Fatal(err)
	}
	s.Root = &specs.Root{Path: rootfs, Readonly: true}
	s.Hostname = "deltaeds"
	s.Process.Terminal = false
	s.Process.User = specs.User{UID: uid, GID: gid}
	s.Process.Args = append(append([]string(nil), cfg.Entrypoint[:1]...), args...)
	s.Process.Cwd = cfg.WorkingDir
	s.Process.Env = append([]string{"PATH=/"}, cfg.Env...)
	s.Process.Capabilities = &specs.LinuxCapabilities{} // the Deployment drops ALL
	s.Process.NoNewPrivileges = true
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.NetworkNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = ns
	for src, dst := range binds {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}
	raw, err = json.MarshalIndent(&s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// numericUser parses "uid:gid", which is all the image's config may say (no /etc/passwd lookup).
func numericUser(u string) (uint32, uint32, error) {
	us, gs, ok := strings.Cut(u, ":")
	uid, err1 := strconv.ParseUint(us, 10, 32)
	gid, err2 := strconv.ParseUint(gs, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("image user %q is not numeric uid:gid", u)
	}
	return uint32(uid), uint32(gid), nil
}

// start runs the bundle in the foreground of a runc child; output goes to the returned buffer.
func start(t *testing.T, runc, state, id, bundleDir string) *container {
	t.Helper()
	c := &container{t: t, runc: runc, state: state, id: id, out: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(runc, "--root", state, "run", "--bundle", bundleDir, id)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("runc run: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = exec.Command(runc, "--root", state, "kill", id, "KILL").Run()
			<-c.done
		}
		if out, err := exec.Command(runc, "--root", state, "delete", "--force", id).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "does not exist") {
			t.Logf("runc delete %s: %v %s", id, err, out)
		}
	})
	return c
}

// wait waits for the container's process to end and returns runc's exit error.
func (c *container) wait(timeout time.Duration) error {
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		return fmt.Errorf("container %s still running after %v", c.id, timeout)
	}
}

// pid is the container's init process on the host, from `runc state`.
func (c *container) pid(ctx context.Context) (int, error) {
	var pid int
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		out, err := exec.Command(c.runc, "--root", c.state, "state", c.id).Output()
		if err != nil {
			return false, nil // not created yet
		}
		var st specs.State
		if err := json.Unmarshal(out, &st); err != nil {
			return false, fmt.Errorf("runc state: %w", err)
		}
		pid = st.Pid
		return st.Status == specs.StateRunning && pid > 0, nil
	})
	return pid, err
}

// TestImageRunsUnderRunc runs the built image with runc as its config says (user 65532, entrypoint)
// on a read-only root without capabilities: `deltaeds version`, then `deltaeds serve` against a
// real kube-apiserver, with an envoysim client that receives the CLA of an EndpointSlice
// created in the API server.
func TestImageRunsUnderRunc(t *testing.T) {
	runc := runcBin(t)
	if os.Geteuid() != 0 {
		t.Fatalf("running containers with runc needs root here (euid %d)", os.Geteuid())
	}
	cf, err := built.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, err := numericUser(cf.Config.User)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	unpack(t, built.Image, rootfs)
	state := t.TempDir()
	prefix := fmt.Sprintf("deltaeds-imagetest-%d-", os.Getpid())

	// deltaeds version: the entrypoint's binary with another command.
	began := time.Now()
	b := bundle(t, runc, rootfs, &cf.Config, []string{"version"}, nil)
	v := start(t, runc, state, prefix+"version", b)
	if err := v.wait(time.Minute); err != nil {
		t.Fatalf("deltaeds version under runc: %v\n%s", err, v.out.String())
	}
	out := v.out.String()
	if !strings.Contains(out, "deltaeds "+testVersion) || !strings.Contains(out, testCommit) {
		t.Fatalf("deltaeds version printed %q, want version %s and commit %s", out, testVersion, testCommit)
	}
	t.Logf("runc run deltaeds version (%v): %s", time.Since(began).Round(time.Millisecond), strings.TrimSpace(out))

	// deltaeds serve against a real kube-apiserver.
	cp := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ns := "imagetest"
	if _, err := cp.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	xdsAddr, err := supervisor.FreeAddress()
	if err != nil {
		t.Fatal(err)
	}
	adminAddr, err := supervisor.FreeAddress()
	if err != nil {
		t.Fatal(err)
	}
	// The kubeconfig, readable by the container's user only (as a Secret volume with fsGroup or
	// defaultMode would make it), bind-mounted read-only.
	const kubeconfigIn = "/etc/deltaeds/kubeconfig"
	kc, err := os.ReadFile(cp.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(kubeconfig, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	b = bundle(t, runc, rootfs, &cf.Config, append(cf.Config.Entrypoint[1:],
		"--kubeconfig="+kubeconfigIn, "--xds-address="+xdsAddr, "--admin-address="+adminAddr,
		"--log-format=json", "--shutdown-timeout=5s"),
		map[string]string{kubeconfig: kubeconfigIn})
	began = time.Now()
	s := start(t, runc, state, prefix+"serve", b)
	defer func() {
		if t.Failed() {
			t.Logf("deltaeds (under runc) output:\n%s", tail(s.out.String(), 40))
		}
	}()

	// The process runs as 65532 on a read-only root.
	pid, err := s.pid(ctx)
	if err != nil {
		t.Fatalf("container never ran: %v\n%s", err, s.out.String())
	}
	uids, gids := procStatus(t, pid, "Uid:"), procStatus(t, pid, "Gid:")
	if uids != "65532 65532 65532 65532" || gids != "65532 65532 65532 65532" {
		t.Errorf("container process ids: Uid %q Gid %q, want 65532 throughout", uids, gids)
	}
	if caps := procStatus(t, pid, "CapEff:"); strings.Trim(caps, "0") != "" {
		t.Errorf("container process has effective capabilities %s", caps)
	}
	if opts := rootMountOptions(t, pid); !strings.Contains(","+opts+",", ",ro,") {
		t.Errorf("container root mounted %q, want read-only", opts)
	}

	admin := &http.Client{Timeout: 5 * time.Second}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		select {
		case <-s.done:
			return false, fmt.Errorf("deltaeds exited: %v", s.err)
		default:
		}
		resp, err := admin.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("deltaeds under runc never ready: %v", err)
	}
	t.Logf("deltaeds serve under runc ready after %v", time.Since(began).Round(time.Millisecond))

	// An EndpointSlice in the API server, and a client through the container's xDS port.
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if _, err := cp.Client().DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client := envoysim.New(envoysim.Config{Target: xdsAddr, NodeID: "imagetest-envoy", Cluster: "imagetest",
		Backoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	name := ns + "/web/http"
	client.Subscribe(name)
	began = time.Now()
	err = client.WaitFor(ctx, func(st envoysim.State) bool {
		h, ok := st.Held(name)
		if !ok || h.CLA == nil {
			return false
		}
		for _, le := range h.CLA.GetEndpoints() {
			for _, lb := range le.GetLbEndpoints() {
				if lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == "192.0.2.10" {
					return true
				}
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("the client never received %s with 192.0.2.10: %v", name, err)
	}
	t.Logf("client received %s through the container in %v", name, time.Since(began).Round(time.Millisecond))
	for _, viol := range client.Violations() {
		t.Errorf("protocol violation: %v", viol)
	}
	if err := client.Close(); err != nil {
		t.Errorf("client close: %v", err)
	}

	// SIGTERM through runc: a graceful stop, exit status 0.
	if out, err := exec.Command(runc, "--root", state, "kill", s.id, "TERM").CombinedOutput(); err != nil {
		t.Fatalf("runc kill TERM: %v %s", err, out)
	}
	if err := s.wait(time.Minute); err != nil {
		t.Errorf("deltaeds under runc did not stop cleanly on SIGTERM: %v", err)
	}
}

// procStatus returns the fields of one line of /proc/PID/status.
func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strings.Join(strings.Fields(rest), " ")
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, key)
	return ""
}

// rootMountOptions returns the per-mount options of / as the process sees it.
func rootMountOptions(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			opts = f[5] // the last mount on / is the one seen
		}
	}
	return opts
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
