package translate_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/deltaeds/deltaeds/translate"
)

func TestServedSelector(t *testing.T) {
	tests := []struct {
		selector, proxyName string
		want                string
		matches             map[string]bool // label set (k=v,...) -> served
		wantErr             bool
	}{
		{want: "!service.kubernetes.io/service-proxy-name", matches: map[string]bool{
			"": true, "service.kubernetes.io/service-proxy-name=other": false}},
		{proxyName: "deltaeds", want: "service.kubernetes.io/service-proxy-name=deltaeds", matches: map[string]bool{
			"": false, "service.kubernetes.io/service-proxy-name=deltaeds": true, "service.kubernetes.io/service-proxy-name=other": false}},
		{selector: "team=shop", want: "!service.kubernetes.io/service-proxy-name,team=shop", matches: map[string]bool{
			"team=shop": true, "team=ops": false, "team=shop,service.kubernetes.io/service-proxy-name=x": false}},
		{selector: "team in (", wantErr: true},
		{proxyName: "not a label value!", wantErr: true},
	}
	for _, tt := range tests {
		got, err := translate.ServedSelector(tt.selector, tt.proxyName)
		if (err != nil) != tt.wantErr {
			t.Fatalf("ServedSelector(%q, %q) error %v, want error %v", tt.selector, tt.proxyName, err, tt.wantErr)
		}
		if err != nil {
			continue
		}
		if got != tt.want {
			t.Errorf("ServedSelector(%q, %q) = %q, want %q", tt.selector, tt.proxyName, got, tt.want)
		}
		sel, err := labels.Parse(got)
		if err != nil {
			t.Fatal(err)
		}
		for set, want := range tt.matches {
			ls, err := labels.ConvertSelectorToLabelsMap(set)
			if err != nil {
				t.Fatal(err)
			}
			if sel.Matches(ls) != want {
				t.Errorf("%q matches %q = %v, want %v", got, set, !want, want)
			}
		}
	}
}
