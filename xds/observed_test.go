package xds

import (
	"testing"
	"time"
)

// TestNextObserved: a batch reports the observation times of the changes it
// propagates, and leaves out first answers to a subscription, whose content
// may be arbitrarily old.
func TestNextObserved(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	at := func(name string, gen int, when time.Time) ResourceUpdate {
		u := set(name, gen)
		u.ObservedAt = when
		return u
	}
	type step struct {
		apply []ResourceUpdate
		sub   *SubscriptionChange
		want  int // len(Batch.Observed) of the Next that follows
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"initial answer to a named subscription is not a change", []step{
			{apply: []ResourceUpdate{at("a", 1, old)}, sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
		}},
		{"a new version of a held name is", []step{
			{apply: []ResourceUpdate{at("a", 1, old)}, sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
			{apply: []ResourceUpdate{at("a", 2, time.Now())}, want: 1},
		}},
		{"a name created after it was answered as absent is", []step{
			{sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
			{apply: []ResourceUpdate{at("a", 1, time.Now())}, want: 1},
		}},
		{"a name subscribed again is answered, not changed", []step{
			{apply: []ResourceUpdate{at("a", 1, old)}, sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
			{sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
		}},
		{"a stale declared version is a change missed while away", []step{
			{apply: []ResourceUpdate{at("a", 2, old)}, sub: &SubscriptionChange{Subscribe: []string{"a"}, InitialVersions: map[string]string{"a": "stale"}}, want: 1},
		}},
		{"unknown observation times are left out", []step{
			{apply: []ResourceUpdate{set("a", 1)}, sub: &SubscriptionChange{Subscribe: []string{"a"}}, want: 0},
			{apply: []ResourceUpdate{set("a", 2)}, want: 0},
		}},
		{"wildcard: the initial sync is not a change, a later creation is", []step{
			{apply: []ResourceUpdate{at("a", 1, old), at("b", 1, old)}, sub: &SubscriptionChange{Subscribe: []string{Wildcard}}, want: 0},
			{apply: []ResourceUpdate{at("c", 1, time.Now().Add(time.Second))}, want: 1},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			s.MarkSynced()
			sub := s.Subscribe(claType, make(chan struct{}, 1), 0)
			defer sub.Close()
			for i, st := range tc.steps {
				if st.apply != nil {
					if _, err := s.Apply(claType, st.apply); err != nil {
						t.Fatal(err)
					}
				}
				if st.sub != nil {
					if err := sub.Update(*st.sub); err != nil {
						t.Fatal(err)
					}
				}
				b := sub.Next(0)
				if got := len(b.Observed); got != st.want {
					t.Errorf("step %d: %d observed in a batch of %v, want %d", i, got, resourceNames(b.Resources), st.want)
				}
				for _, o := range b.Observed {
					if o.IsZero() {
						t.Errorf("step %d: a zero observation time", i)
					}
				}
			}
		})
	}
}
