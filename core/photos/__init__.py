"""Photo evidence: recognising a copy of an enrolled *photo* (not the person in it): a descriptor
of the whole photo that survives blur, fog, dark, noise, rain, down-scaling and glare. It says
"this is a copy of that enrolled photo", never "this is that person" (`descriptor`)."""
