//go:build !unix

package state

import (
	"errors"
	"os"
)

// flock takes no lock where flock(2) does not exist.
func flock(*os.File) error { return errors.ErrUnsupported }
