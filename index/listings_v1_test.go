package index

// encodeListingV1 writes a schema 1 listing value, as the previous version
// stored a whole folder (see decodeListingV1); tests use it to build
// schema 1 files. It fails with ErrInvalid where that version did.
func encodeListingV1(l Listing) ([]byte, error) {
	if err := checkListingV1(l); err != nil {
		return nil, err
	}
	e := encoder{b: make([]byte, 0, 16+32*len(l.Dirs)+96*len(l.Files))}
	e.b = append(e.b, codecV1)
	e.time(l.ListedAt)
	e.uvarint(uint64(len(l.Dirs)))
	for _, d := range l.Dirs {
		e.str(d)
	}
	e.uvarint(uint64(len(l.Files)))
	for _, o := range l.Files {
		e.str(o.Key)
		e.varint(o.Size)
		e.str(o.ETag)
		e.time(o.LastModified)
	}
	return e.b, nil
}

// checkListingV1 is what schema 1 checked before storing a listing:
// sorted, unique, no negative size.
func checkListingV1(l Listing) error {
	for i := 1; i < len(l.Dirs); i++ {
		if l.Dirs[i-1] >= l.Dirs[i] {
			return ErrInvalid
		}
	}
	for i, o := range l.Files {
		if o.Size < 0 || (i > 0 && l.Files[i-1].Key >= o.Key) {
			return ErrInvalid
		}
	}
	return nil
}
