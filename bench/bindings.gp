# bindings.gp - the plot of bench/bindings.sh: CPU ns per call against N for
# C and the Go and Rust bindings, and each binding's ratio to C.
#   gnuplot -e "dat='bench/build/bindings.dat'; out='x.png'; stamp='...'" bench/bindings.gp
# dat columns: N, C get, Go AppendValue, Go GetMany (per key), Go Get,
# Rust get, C list100, Go ListFunc, Go List, Rust list100, one bare cgo call
# (hot), C GET loop run inside the Go process, Go AppendValue beside it,
# Rust's raw extern call, Rust's View::get beside it
set terminal pngcairo size 1500,520 noenhanced font ",10"
set output out
set multiplot layout 1,3 title "watchcache bindings: GET and LIST of ~1 KiB pods, CPU ns per call, ".stamp
set logscale x
set grid
set key top left
set xlabel "N objects"
set format x "%.0s%c"
set xrange [5000:2000000]
set title "GET, value copied out (ns/call)"
set ylabel "CPU ns per GET"
set logscale y
plot dat using 1:2 with linespoints lw 2 pt 7 title "C wcache_view_get + memcpy", \
     "" using 1:3 with linespoints lw 2 pt 5 title "Go AppendValue", \
     "" using 1:4 with linespoints lw 2 pt 9 title "Go GetMany (per key, 256 a call)", \
     "" using 1:5 with linespoints lw 2 pt 11 title "Go Get (new slice)", \
     "" using 1:6 with linespoints lw 2 pt 13 title "Rust View::get + copy", \
     "" using 1:11 with lines dt 2 lw 1 lc rgb "gray40" title "one bare cgo call (hot)"
set title "GET, binding / C (targets: Go 2x, Rust 1.1x)"
set ylabel "ratio to C"
unset logscale y
set yrange [0:3.5]
set key top left box opaque
plot dat using 1:($3/$2) with linespoints lw 2 pt 5 lc 2 title "Go AppendValue / C", \
     "" using 1:($4/$2) with linespoints lw 2 pt 9 lc 3 title "Go GetMany / C", \
     "" using 1:($13/$12) with linespoints lw 2 pt 4 lc 7 title "Go AppendValue / C, same process", \
     "" using 1:($6/$2) with linespoints lw 2 pt 13 lc 5 title "Rust / C", \
     "" using 1:($15/$14) with linespoints lw 2 pt 12 lc 8 title "Rust / raw call, same process", \
     2 with lines dt 2 lc rgb "red" title "Go target 2x", \
     1.1 with lines dt 3 lc rgb "dark-violet" title "Rust target 1.1x"
set title "LIST, page of 100 from a random key (ns/call)"
set ylabel "CPU ns per LIST"
set logscale y
set yrange [*:*]
set key top left nobox noopaque
plot dat using 1:7 with linespoints lw 2 pt 7 lc 1 title "C wcache_view_list", \
     "" using 1:8 with linespoints lw 2 pt 5 lc 2 title "Go ListFunc (no copy)", \
     "" using 1:9 with linespoints lw 2 pt 11 lc 4 title "Go List (copied to Go)", \
     "" using 1:10 with linespoints lw 2 pt 13 lc 5 title "Rust View::list"
unset multiplot
