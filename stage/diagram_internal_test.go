package stage

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// TestDiagrams checks the Mermaid diagram of each stage kind's FSM against
// its golden file: both terminal states are drawn as ends (Drained --> [*],
// Failed --> [*]), and Drained still leaves on Error, the failure of the
// actions that entered it.
func TestDiagrams(t *testing.T) {
	for _, k := range []kind{kindSource, kindTransform, kindSink} {
		t.Run(k.String(), func(t *testing.T) {
			def, err := definitions[k]()
			require.NoError(t, err)
			got := def.Mermaid()
			assert.Contains(t, got, "Drained --> [*]")
			assert.Contains(t, got, "Failed --> [*]")
			assert.Contains(t, got, "Drained --> Failed : Error")

			path := filepath.Join("testdata", k.String()+".mmd")
			if *update {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create it")
			assert.Equal(t, string(want), got)
		})
	}
}
