package blockcache

import (
	"os"
	"syscall"
)

// statBlocks is the number of 512-byte blocks a file occupies.
func statBlocks(info os.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks
	}
	return 0
}
