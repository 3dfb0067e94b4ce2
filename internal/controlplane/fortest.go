package controlplane

import "testing"

// StartForTest starts a control plane for a test (Start with the test's context) and stops it
// when the test ends, failing the test if either goes wrong.
func StartForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	cp, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start control plane (run `make testbin` first): %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}
