package h1

// Field returns the value of the request's first field whose name, in lower
// case, is lowerName (not one of the fields the codec interprets itself,
// such as Host or Cookie).
func (h *Head) Field(lowerName string) ([]byte, bool) {
	for i := range h.fields {
		f := &h.fields[i]
		if f.id == fOther && equalFold(f.name, lowerName) {
			return f.value, true
		}
	}
	return nil, false
}

// Cookie returns the value of the request's first cookie called name, read
// as net/http's Request.Cookie reads it. The answer is kept until the
// next parse: asking again for the same name does not scan the fields.
func (h *Head) Cookie(name string) ([]byte, bool) {
	if name != "" && name == h.cookieName {
		return h.cookieVal, h.cookieOK
	}
	v, ok := h.cookie(name)
	h.cookieName, h.cookieVal, h.cookieOK = name, v, ok
	return v, ok
}

func (h *Head) cookie(name string) ([]byte, bool) {
	for i := range h.fields {
		f := &h.fields[i]
		if f.id != fCookie {
			continue
		}
		if v, ok := cookieValue(f.value, name); ok {
			return v, true
		}
	}
	return nil, false
}
