package sqlstore

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decodeJSON must decode exactly as encoding/json does, fast path or not.
func TestDecodeJSONMatchesEncodingJSON(t *testing.T) {
	ints := []string{"[]", "[0]", "[0,1,2,7]", "[12,3]", "null", "[ 1 ]", "[1,]", "[,1]", "[-1]", "[1.5]", "[99999999999]", "[01]", "{}", "[1,2", ""}
	for _, s := range ints {
		var got, want []int
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("[]int from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
	for _, s := range []string{"[]", "null", `["a","b"]`, "[1]"} {
		var got, want []string
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("[]string from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
	for _, s := range []string{"{}", "null", `{"a":"b"}`, "[]"} {
		var got, want map[string]string
		gerr := decodeJSON(s, &got)
		werr := json.Unmarshal([]byte(s), &want)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("map from %q: got %#v, %v; encoding/json gives %#v, %v", s, got, gerr, want, werr)
		}
	}
}
