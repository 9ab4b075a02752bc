// Simulation-only image loader of the co-simulation top (tb/cosim/sim_top.py SimTop): the testbench
// writes a whole image (NW 32-bit controller words) on `burst` and pulses `go_in`; the loader then
// offers the words one by one on the controller's image stream, so Python wakes once per image.
//
// Cycle behaviour (unchanged from the Amaranth loader it replaces): the words are captured at the
// clock edge where go_in is high and busy low; busy rises one cycle later (go_in registered) and
// falls after the transfer of word NW-1. In hand-written Verilog so that Verilator touches the
// 32*NW-bit image only at the capture edge: the Amaranth version (a one-row wide memory and a
// word_select of it) cost three 6,304-bit operations per clock, about a third of the model's time.

module img_loader #(
    parameter NW = 197, IW = 8          // words per image; bits of the word index (>= clog2(NW))
) (
    input  wire            clk,
    input  wire            rst,
    input  wire [32*NW-1:0] burst,
    input  wire            go_in,
    output reg             busy,
    output wire [31:0]     payload,
    input  wire            ready
);
    reg [31:0] words [0:NW-1];
    reg go;
    reg [IW-1:0] idx;
    integer i;
    initial begin go = 0; busy = 0; idx = 0; end
    always @(posedge clk) begin
        if (go_in && !busy)
            for (i = 0; i < NW; i = i + 1) words[i] <= burst[32*i +: 32];
        if (rst) begin
            go <= 0; busy <= 0; idx <= 0;
        end else begin
            go <= go_in;
            if (go && !busy) begin
                idx <= 0; busy <= 1;
            end
            if (busy && ready) begin
                idx <= idx + 1;
                if (idx == NW - 1) busy <= 0;
            end
        end
    end
    assign payload = words[idx];
endmodule
