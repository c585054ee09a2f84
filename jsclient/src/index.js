// Placeholder: the client library lands here.
