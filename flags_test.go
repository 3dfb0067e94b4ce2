package main

import (
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deltaeds/deltaeds/bootstrap"
	"github.com/deltaeds/deltaeds/delta"
)

// parseServeFlags parses args (and the environment) with serve's flag table
// and returns the config they fill, as serveCommand's action sees it.
func parseServeFlags(t *testing.T, args ...string) serveConfig {
	t.Helper()
	var (
		cfg        serveConfig
		namespaces cli.StringSlice
	)
	app := &cli.App{
		Name: "flags", Writer: io.Discard, ErrWriter: io.Discard,
		Flags:  cliFlags(serveFlags(&cfg, &namespaces)),
		Action: func(*cli.Context) error { return nil },
	}
	if err := app.Run(append([]string{"flags"}, args...)); err != nil {
		t.Fatal(err)
	}
	cfg.Namespaces = namespaces.Value()
	return cfg
}

// TestFlagsReachConfig: every flag, given on the command line or in its
// environment variable, lands in its serveConfig field; without them, the
// defaults do.
func TestFlagsReachConfig(t *testing.T) {
	defaults := parseServeFlags(t)
	if err := defaults.validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	want := serveConfig{
		Kubeconfig: "/k", KubeQPS: 7.5, KubeBurst: 9,
		XDSAddress: "127.0.0.1:1", AdminAddress: "127.0.0.1:2",
		Namespaces: []string{"a", "b"}, LabelSelector: "x=y", ServiceProxyName: "p",
		IncludeUnready: true, NodeLocality: true, ZoneFromNode: true, InternalTrafficPolicy: true, IPFamily: "ipv6", DeletedGracePeriod: time.Second, Workers: 3, ProbeInterval: 2 * time.Second,
		TLSCertFile: "/c", TLSKeyFile: "/k2", TLSClientCAFile: "/ca",
		MaxConnectionAge: 3 * time.Second, MaxConnectionAgeGrace: 4 * time.Second,
		KeepaliveTime: 5 * time.Second, KeepaliveTimeout: 6 * time.Second, KeepaliveMinTime: 7 * time.Second,
		MaxSubscriptionsPerStream: 11, MaxResponseBytes: 12, MaxRequestBytes: 13, MaxConcurrentStreams: 14,
		NodeNameMetadataKey: "example.com/node",
		AckTimeout:          8 * time.Second, ShutdownTimeout: 9 * time.Second, LogLevel: "debug", LogFormat: "console",
	}
	args := []string{
		"--kubeconfig", "/k", "--kube-qps", "7.5", "--kube-burst", "9",
		"--xds-address", "127.0.0.1:1", "--admin-address", "127.0.0.1:2",
		"--namespace", "a", "--namespace", "b", "--label-selector", "x=y", "--service-proxy-name", "p",
		"--include-unready", "--node-locality", "--zone-from-node", "--internal-traffic-policy", "--ip-family", "ipv6", "--deleted-grace-period", "1s", "--workers", "3", "--apiserver-probe-interval", "2s",
		"--tls-cert-file", "/c", "--tls-key-file", "/k2", "--tls-client-ca-file", "/ca",
		"--max-connection-age", "3s", "--max-connection-age-grace", "4s",
		"--keepalive-time", "5s", "--keepalive-timeout", "6s", "--keepalive-min-time", "7s",
		"--max-subscriptions-per-stream", "11", "--max-response-bytes", "12", "--max-request-bytes", "13", "--max-concurrent-streams", "14",
		"--node-name-metadata-key", "example.com/node",
		"--ack-timeout", "8s", "--shutdown-timeout", "9s", "--log-level", "debug", "--log-format", "console",
	}
	if got := parseServeFlags(t, args...); !reflect.DeepEqual(got, want) {
		t.Errorf("from the command line:\n got %+v\nwant %+v", got, want)
	}

	// The same through the environment, DELTAEDS_ and the name in capitals.
	env := map[string]string{}
	for i := 0; i < len(args); i++ {
		name := args[i][2:]
		value := "true"
		if i+1 < len(args) && len(args[i+1]) > 0 && args[i+1][0] != '-' {
			i++
			value = args[i]
		}
		key := cliFlags([]serveFlag{{Flag: &cli.StringFlag{Name: name}}})[0].(*cli.StringFlag).EnvVars[0]
		if old, ok := env[key]; ok {
			value = old + "," + value // --namespace, repeated
		}
		env[key] = value
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	if got := parseServeFlags(t); !reflect.DeepEqual(got, want) {
		t.Errorf("from the environment (%v):\n got %+v\nwant %+v", env, got, want)
	}
}

// TestNodeNameMetadataKeyAgrees: deltaeds bootstrap --node-name writes the
// client's node name where deltaeds serve reads it by default.
func TestNodeNameMetadataKeyAgrees(t *testing.T) {
	got := parseServeFlags(t).NodeNameMetadataKey
	if got != delta.DefaultNodeNameMetadataKey || bootstrap.NodeNameMetadataKey != delta.DefaultNodeNameMetadataKey {
		t.Fatalf("serve reads %q; bootstrap writes %q; delta's default is %q", got, bootstrap.NodeNameMetadataKey, delta.DefaultNodeNameMetadataKey)
	}
}
