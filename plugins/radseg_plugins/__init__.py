"""The plugins that ship with radseg; each loads through the `radseg` entry-point group."""
