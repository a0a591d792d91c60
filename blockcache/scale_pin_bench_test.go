package blockcache

import (
	"testing"
	"time"

	"s3cachefs/index"
)

// pinAll pins every record of scaleIndex to one job, by their folder.
func pinAll(b *testing.B, db *index.DB) {
	if err := db.PutJob(index.Job{ID: "j", Paths: []string{""}, Created: time.Now(), State: index.JobDone}); err != nil {
		b.Fatal(err)
	}
	if err := db.Pin("j", map[string]int64{"ds/train": scaleRecords}); err != nil {
		b.Fatal(err)
	}
}
