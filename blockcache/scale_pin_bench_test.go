package blockcache

import (
	"fmt"
	"testing"
	"time"

	"s3cachefs/index"
)

// pinAll pins every record of scaleIndex to one job.
func pinAll(b *testing.B, db *index.DB) {
	if err := db.PutJob(index.Job{ID: "j", Paths: []string{""}, Created: time.Now(), State: index.JobDone}); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, scaleRecords)
	for i := range ids {
		ids[i] = fmt.Sprintf("%064x", i)
	}
	if err := db.Pin("j", ids); err != nil {
		b.Fatal(err)
	}
}
