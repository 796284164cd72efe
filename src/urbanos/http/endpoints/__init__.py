"""One module per resource; each handler's docstring cites its clause of GS CIM 009."""
