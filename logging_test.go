package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// TestKlogBridgeKeepsTheCaller: client-go's log lines, through klog and zapr,
// name the client-go line that logged as their caller, not the bridge; and a
// klog call's caller is the line that called klog.
func TestKlogBridgeKeepsTheCaller(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	restore := logKlogTo(log)
	stop := make(chan struct{})
	close(stop)
	// Logs "Waiting for caches to sync" through klog.Background(), then
	// gives up at once.
	cache.WaitForNamedCacheSync("caller-test", stop, func() bool { return false })
	klog.InfoS("straight through klog", "key", "value")
	klog.Flush()
	restore()

	callers := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := m["msg"].(string)
		if msg == "Waiting for caches to sync" && m["logger"] != "client-go" {
			t.Errorf("logger = %v, want client-go: %s", m["logger"], line)
		}
		caller, _ := m["caller"].(string)
		callers[msg] = caller
	}
	if c := callers["Waiting for caches to sync"]; !strings.HasPrefix(c, "cache/shared_informer.go:") {
		t.Errorf("client-go's line has caller %q, want cache/shared_informer.go (all lines: %s)", c, buf.String())
	}
	if c := callers["straight through klog"]; !strings.HasSuffix(strings.Split(c, ":")[0], "/logging_test.go") {
		t.Errorf("a klog call's caller is %q, want logging_test.go", c)
	}
}
