"""Maps of tile scores: the raster every map view and export draws from."""
