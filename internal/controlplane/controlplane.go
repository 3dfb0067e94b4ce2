package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/deltaeds/deltaeds/internal/supervisor"
)

// Component names, as used by LogTail and in log prefixes.
const (
	Etcd              = binEtcd
	APIServer         = binAPIServer
	ControllerManager = binControllerManager
)

// DefaultStartTimeout bounds how long Start and StartAPIServer wait for readiness when the
// context has no earlier deadline. Generous: on 2 cores with other test packages running, a cold
// kube-apiserver can take tens of seconds.
const DefaultStartTimeout = 2 * time.Minute

// Options configures Start. The zero value starts etcd and kube-apiserver only.
type Options struct {
	// ControllerManager also starts kube-controller-manager running only the endpointslice and
	// endpointslicemirroring controllers, so Services with selectors get real EndpointSlices.
	ControllerManager bool
	// Dir is where the control plane's temporary folder (data, certificates, kubeconfigs, logs)
	// is created; "" means os.TempDir(). Stop removes the temporary folder, never Dir itself.
	Dir string
	// LogTo, when set, receives every line the children print, prefixed with "[component] ".
	// It is written to from other goroutines, never after Stop returns. The output is always
	// kept in log files too: see LogTail.
	LogTo io.Writer
	// BinDir overrides where the binaries are found (default: BinDir()).
	BinDir string
	// StartTimeout bounds readiness waits (default DefaultStartTimeout).
	StartTimeout time.Duration
	// APIServerArgs are appended to kube-apiserver's flags (a later flag wins).
	APIServerArgs []string
	// ExtraControllers are run by kube-controller-manager besides the EndpointSlice ones, by
	// their --controllers names (e.g. "garbagecollector", which deletes a deleted Service's
	// EndpointSlices). Ignored unless ControllerManager is set.
	ExtraControllers []string
}

// ControlPlane is a running local control plane. Its methods are safe for concurrent use.
type ControlPlane struct {
	opts Options
	dir  string
	pki  *pki

	mu         sync.Mutex // guards the processes and stopped
	etcd       *supervisor.Process
	apiserver  *supervisor.Process
	kcm        *supervisor.Process // nil unless Options.ControllerManager
	stopped    bool
	logMu      sync.Mutex // serializes writes to Options.LogTo
	etcdURL    string
	apiURL     string
	restConfig *rest.Config
	client     *kubernetes.Clientset
	kubeconfig string
}

// Start launches etcd and kube-apiserver (and kube-controller-manager if asked) on free loopback
// ports in a new temporary folder, and returns once they are ready: etcd's /health and
// kube-apiserver's /readyz answer, and for the controller manager its EndpointSlice controllers
// have started. ctx bounds only the start; the processes run until Stop (or the test process's
// death). On error nothing is left running and the error carries the tail of the failing log.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = BinDir(); err != nil {
			return nil, err
		}
	}
	names := []string{binEtcd, binAPIServer}
	if opts.ControllerManager {
		names = append(names, binControllerManager)
	}
	bins, err := findBinaries(binDir, names...)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp(opts.Dir, "deltaeds-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("controlplane: creating the temporary folder: %w", err)
	}
	cp := &ControlPlane{opts: opts, dir: dir}
	cp.etcd = cp.newProcess(binEtcd, bins[binEtcd])
	cp.apiserver = cp.newProcess(binAPIServer, bins[binAPIServer])
	if opts.ControllerManager {
		cp.kcm = cp.newProcess(binControllerManager, bins[binControllerManager])
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := cp.start(ctx); err != nil {
		_ = cp.Stop() // the start error says what went wrong; teardown errors would only repeat it
		return nil, fmt.Errorf("controlplane: %w (binaries from %s)", err, binDir)
	}
	return cp, nil
}

func (cp *ControlPlane) newProcess(name, path string) *supervisor.Process {
	spec := supervisor.Spec{Name: name, Path: path, LogPath: filepath.Join(cp.dir, name+".log")}
	if cp.opts.LogTo != nil {
		spec.LogTo = &prefixWriter{mu: &cp.logMu, w: cp.opts.LogTo, prefix: []byte("[" + name + "] ")}
	}
	return supervisor.New(spec)
}

func (cp *ControlPlane) start(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()

	var err error
	if cp.pki, err = newPKI(); err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	files, err := cp.pki.writeFiles(cp.dir)
	if err != nil {
		return err
	}
	if err := cp.startEtcd(ctx); err != nil {
		return err
	}
	if err := cp.startFirstAPIServer(ctx, files); err != nil {
		return err
	}

	cp.kubeconfig = filepath.Join(cp.dir, "admin.kubeconfig")
	if err := os.WriteFile(cp.kubeconfig, kubeconfig(cp.apiURL, cp.pki.ca.CertPEM, "admin", cp.pki.admin), 0o600); err != nil {
		return fmt.Errorf("writing the admin kubeconfig: %w", err)
	}
	cp.restConfig = &rest.Config{
		Host: cp.apiURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.pki.ca.CertPEM,
			CertData: cp.pki.admin.CertPEM,
			KeyData:  cp.pki.admin.KeyPEM,
		},
		// Tests create objects in bursts; client-go's default 5 QPS would make them crawl.
		QPS:   200,
		Burst: 400,
	}
	if cp.client, err = kubernetes.NewForConfig(cp.restConfig); err != nil {
		return fmt.Errorf("creating the admin client: %w", err)
	}

	if cp.kcm != nil {
		if err := cp.startControllerManager(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startEtcd starts etcd on fresh ports, picking others when one was taken meanwhile.
func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	dataDir := filepath.Join(cp.dir, "etcd-data")
	pick := func() error {
		ports, err := supervisor.FreePorts(2)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(dataDir); err != nil { // a failed attempt's
			return fmt.Errorf("removing %s: %w", dataDir, err)
		}
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		cp.etcd.SetArgs([]string{
			"--name=deltaeds-test",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=deltaeds-test=" + peer,
			"--initial-cluster-state=new",
			"--unsafe-no-fsync",
		})
		cp.etcdURL = client
		return nil
	}
	err := cp.etcd.StartReady(ctx, func(ctx context.Context) error {
		return getOK(ctx, plainHTTP, cp.etcdURL+"/health", `"health":"true"`)
	}, pick)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	return nil
}

// startFirstAPIServer picks kube-apiserver's port and starts it, picking another when the chosen
// one was taken meanwhile. The port then stays the same across StartAPIServer.
func (cp *ControlPlane) startFirstAPIServer(ctx context.Context, files pkiFiles) error {
	pick := func() error {
		ports, err := supervisor.FreePorts(1)
		if err != nil {
			return err
		}
		cp.apiURL = "https://127.0.0.1:" + strconv.Itoa(ports[0])
		cp.apiserver.SetArgs(append([]string{
			"--etcd-servers=" + cp.etcdURL,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--advertise-address=127.0.0.1",
			"--endpoint-reconciler-type=none", // required with a loopback advertise address
			"--tls-cert-file=" + files.servingCert,
			"--tls-private-key-file=" + files.servingKey,
			"--client-ca-file=" + files.caCert,
			"--service-account-key-file=" + files.saPub,
			"--service-account-signing-key-file=" + files.saKey,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--authorization-mode=RBAC",
			"--disable-admission-plugins=ServiceAccount",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--allow-privileged=true",
			"--cert-dir=" + filepath.Join(cp.dir, "apiserver-certs"), // unused: certificates are given
		}, cp.opts.APIServerArgs...))
		return nil
	}
	return cp.startAPIServerLocked(ctx, pick)
}

// startAPIServerLocked starts kube-apiserver and waits for /readyz; pick is as in
// supervisor.Process.StartReady (nil keeps the port).
func (cp *ControlPlane) startAPIServerLocked(ctx context.Context, pick func() error) error {
	client := cp.adminHTTPClient()
	err := cp.apiserver.StartReady(ctx, func(ctx context.Context) error {
		if err := getOK(ctx, client, cp.apiURL+"/readyz", "ok"); err != nil {
			// The verbose form names the checks still failing.
			return fmt.Errorf("%w; %s", err, strings.TrimSpace(getBody(ctx, client, cp.apiURL+"/readyz?verbose")))
		}
		return nil
	}, pick)
	if err != nil {
		return fmt.Errorf("starting kube-apiserver at %s: %w", cp.apiURL, err)
	}
	return nil
}

// Lines kube-controller-manager v1.37 logs at the default verbosity once its EndpointSlice
// controllers run; with --secure-port=0 it serves no health endpoint, so its log tells readiness.
// Each controller then waits for its informers ("Caches are synced").
var kcmReadyMarkers = []string{
	`"Starting endpoint slice controller"`,
	`"Starting EndpointSliceMirroring controller"`,
}

// startControllerManager starts kube-controller-manager and waits until its EndpointSlice
// controllers have started and synced their caches.
func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	kc := filepath.Join(cp.dir, "controller-manager.kubeconfig")
	if err := os.WriteFile(kc, kubeconfig(cp.apiURL, cp.pki.ca.CertPEM, "system:kube-controller-manager", cp.pki.controllerManager), 0o600); err != nil {
		return fmt.Errorf("writing the controller-manager kubeconfig: %w", err)
	}
	cp.kcm.SetArgs([]string{
		"--kubeconfig=" + kc,
		"--controllers=" + strings.Join(append([]string{"endpointslice", "endpointslicemirroring"}, cp.opts.ExtraControllers...), ","),
		"--leader-elect=false",
		"--secure-port=0",
	})
	// It binds no port (--secure-port=0), so a run never fails for a port in use.
	err := cp.kcm.StartReady(ctx, func(context.Context) error {
		log, err := os.ReadFile(cp.kcm.LogPath())
		if err != nil {
			return err
		}
		for _, m := range kcmReadyMarkers {
			if !bytes.Contains(log, []byte(m)) {
				return fmt.Errorf("no %s in the log yet", m)
			}
		}
		if n := bytes.Count(log, []byte(`"Caches are synced"`)); n < len(kcmReadyMarkers) {
			return fmt.Errorf("caches not synced yet")
		}
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	return nil
}

// plainHTTP talks to etcd. No keep-alive: no idle connection (and goroutine) outlives a check.
var plainHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// adminHTTPClient talks to kube-apiserver as the admin, without keep-alive.
func (cp *ControlPlane) adminHTTPClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.ca.CertPEM)
	cert, err := tls.X509KeyPair(cp.pki.admin.CertPEM, cp.pki.admin.KeyPEM)
	if err != nil {
		// Generated by newPKI a moment ago: cannot fail.
		panic(fmt.Sprintf("controlplane: loading the admin key pair: %v", err))
	}
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}
}

// getOK GETs url and fails unless the status is 200 and the body contains want.
func getOK(ctx context.Context, c *http.Client, url, want string) error {
	code, body, err := get(ctx, c, url)
	if err != nil {
		return err
	}
	if code != http.StatusOK || !strings.Contains(body, want) {
		return fmt.Errorf("GET %s: %d", url, code)
	}
	return nil
}

// getBody GETs url and returns its body, or the error.
func getBody(ctx context.Context, c *http.Client, url string) string {
	_, body, err := get(ctx, c, url)
	if err != nil {
		return err.Error()
	}
	return body
}

func get(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return resp.StatusCode, string(b), fmt.Errorf("reading %s: %w", url, err)
	}
	return resp.StatusCode, string(b), nil
}

// RESTConfig returns a copy of the admin client configuration (a system:masters identity;
// certificates inline, so client-go starts no file-watching goroutine).
func (cp *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(cp.restConfig) }

// Client returns a typed clientset for the admin.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// KubeconfigPath returns a self-contained kubeconfig file for the admin, for subprocesses such as
// `deltaeds serve --kubeconfig`. It is removed by Stop.
func (cp *ControlPlane) KubeconfigPath() string { return cp.kubeconfig }

// APIServerURL returns kube-apiserver's address, https://127.0.0.1:PORT, the same across restarts.
func (cp *ControlPlane) APIServerURL() string { return cp.apiURL }

// EtcdURL returns etcd's client address.
func (cp *ControlPlane) EtcdURL() string { return cp.etcdURL }

// Dir returns the control plane's temporary folder (removed by Stop).
func (cp *ControlPlane) Dir() string { return cp.dir }

// LogTail returns the last n lines of a component's log (Etcd, APIServer or ControllerManager),
// for a failing test to print. The logs live in Dir until Stop.
func (cp *ControlPlane) LogTail(component string, n int) string {
	for _, p := range []*supervisor.Process{cp.etcd, cp.apiserver, cp.kcm} {
		if p != nil && p.Name() == component {
			return p.Tail(n)
		}
	}
	return fmt.Sprintf("(no component %q)", component)
}

// Pids returns the process ids of kube-apiserver and etcd (0 for one not running), so a caller
// can read what they cost (the benchmark reports their memory alongside deltaeds').
func (cp *ControlPlane) Pids() (apiserver, etcd int) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.apiserver.Pid(), cp.etcd.Pid()
}

// StopAPIServer kills kube-apiserver (SIGKILL, like a crash) and waits for it to exit; etcd and
// the controller manager keep running. Requests fail until StartAPIServer. It returns an error if
// kube-apiserver had already died by itself.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return errors.New("controlplane: StopAPIServer after Stop")
	}
	if err := cp.apiserver.Kill(); err != nil {
		return fmt.Errorf("controlplane: stopping kube-apiserver: %w", err)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, on the same port with the same
// certificates and etcd, so existing clients and kubeconfigs work again, and waits for /readyz
// (bounded by Options.StartTimeout). If the port was taken meanwhile it retries until then.
func (cp *ControlPlane) StartAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return errors.New("controlplane: StartAPIServer after Stop")
	}
	if !cp.apiserver.Exited() {
		return errors.New("controlplane: StartAPIServer: kube-apiserver is running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cp.opts.StartTimeout)
	defer cancel()
	// The old socket or another process may still hold the port: StartReady retries on it.
	if err := cp.startAPIServerLocked(ctx, nil); err != nil {
		return fmt.Errorf("controlplane: restarting kube-apiserver: %w", err)
	}
	return nil
}

// Stop kills every process, waits for them and removes the temporary folder. It returns an error
// if a process had died before (with its log tail) or the folder cannot be removed. Calling it
// again is a no-op.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return nil
	}
	cp.stopped = true
	var errs []error
	// Clients first, then the server, then its storage.
	// SIGKILL: teardown needs no graceful shutdown, and it is immediate.
	for _, p := range []*supervisor.Process{cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			errs = append(errs, p.Kill())
		}
	}
	if err := os.RemoveAll(cp.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", cp.dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("controlplane: stop: %w", err)
	}
	return nil
}
