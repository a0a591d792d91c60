package main

import (
	"s3cachefs/blockcache/prefetch"
	"s3cachefs/cmd/s3cachefs/api"
)

// The control socket's JSON is package api's; these map the daemon's own
// types onto it, so that the prefetch package's types can change without changing
// what the socket says. Where the fields are the same today, a conversion
// does it; a field added on either side then fails to compile here.

// jobWire is p as the control socket shows a job.
func jobWire(p prefetch.Progress) api.Job {
	j := api.Job{ID: p.ID, State: p.State, Error: p.Error, Failed: p.Failed, ElapsedSeconds: p.ElapsedSeconds, Shard: p.Shard}
	if p.Folders != nil {
		j.Folders = make([]api.Folder, len(p.Folders))
	}
	for i, f := range p.Folders {
		j.Folders[i] = api.Folder(f)
	}
	return j
}

// jobsWire maps every job of ps.
func jobsWire(ps []prefetch.Progress) []api.Job {
	if ps == nil {
		return nil
	}
	out := make([]api.Job, len(ps))
	for i, p := range ps {
		out[i] = jobWire(p)
	}
	return out
}

// reportsWire maps verify's reports.
func reportsWire(rs []prefetch.FolderReport) []api.FolderReport {
	if rs == nil {
		return nil
	}
	out := make([]api.FolderReport, len(rs))
	for i, r := range rs {
		out[i] = api.FolderReport(r)
	}
	return out
}
