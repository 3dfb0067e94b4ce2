package delta

import (
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/deltaeds/deltaeds/xds"
)

// TestIgnoredTypesAreLoggedBounded: a client cycling through type URLs the
// store does not serve gets each logged once, up to a bound, then one line
// saying logging stopped; the stream's memory of them stays bounded.
func TestIgnoredTypesAreLoggedBounded(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	store := xds.NewStore()
	s := NewServer(store, Config{Logger: zap.New(core)})
	st := &stream{server: s, log: s.log, ignored: make(map[string]bool)}
	for round := range 3 {
		for i := range 100 {
			st.ignore(fmt.Sprintf("type.googleapis.com/hostile.Type%d", i))
		}
		if got, want := logs.Len(), maxIgnoredTypesLogged+1; got != want {
			t.Fatalf("round %d: %d log lines, want %d", round, got, want)
		}
		if len(st.ignored) > maxIgnoredTypesLogged+1 {
			t.Fatalf("round %d: the stream remembers %d types", round, len(st.ignored))
		}
	}
	if last := logs.All()[logs.Len()-1]; last.Level != zap.WarnLevel {
		t.Fatalf("last line %q at %v, want the warning that logging stopped", last.Message, last.Level)
	}
}
