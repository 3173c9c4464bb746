package sqlstore

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gpumarket/gpumarket/internal/coord"
)

func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, tc := range []struct {
		name    string
		fsys    fstest.MapFS
		want    []int64
		wantErr string
	}{
		{"ordered by number, not name", fstest.MapFS{
			"migrations/10_c.sql": file("c"), "migrations/2_b.sql": file("b"), "migrations/0001_a.sql": file("a"),
			"migrations/README": file("not sql"),
		}, []int64{1, 2, 10}, ""},
		{"none", fstest.MapFS{}, nil, ""},
		{"no number", fstest.MapFS{"migrations/init.sql": file("")}, nil, "must start with a positive number"},
		{"zero", fstest.MapFS{"migrations/0000_init.sql": file("")}, nil, "must start with a positive number"},
		{"same version", fstest.MapFS{"migrations/1_a.sql": file(""), "migrations/01_b.sql": file("")}, nil, "same version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := loadMigrations(tc.fsys)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, m := range ms {
				got = append(got, m.Version)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("versions = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEmbedded checks the migrations this binary ships.
func TestEmbedded(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || ms[0].Name != "0001_init.sql" {
		t.Fatalf("got %d migrations, first %+v; want 0001_init.sql first", len(ms), ms[:min(1, len(ms))])
	}
}

// The outcome count says the types of the partial index it reads as the
// index's migration does, and both are coord.OutcomeTypes: a type added to
// one and not the others would be left out of reliability, or make both
// databases scan every event of the machine.
func TestOutcomeTypesMatchTheirIndex(t *testing.T) {
	quoted := make([]string, len(coord.OutcomeTypes))
	for i, typ := range coord.OutcomeTypes {
		quoted[i] = "'" + typ + "'"
	}
	cond := "type IN (" + strings.Join(quoted, ", ") + ")"
	if !strings.Contains(qOutcomeCounts, cond+" AND (") {
		t.Errorf("qOutcomeCounts does not say %s:\n%s", cond, qOutcomeCounts)
	}
	sql, err := migrations.ReadFile("migrations/0020_events_machine_outcomes.sql")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(sql), cond) {
		t.Errorf("migration 0020 does not say %s:\n%s", cond, sql)
	}
}
