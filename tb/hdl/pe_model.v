// Simulation-only behavioural model of one PE board slot: a 128 x 16 1T1R array behind two
// sample-and-hold banks and 32 ADCs shared 4:1 (SL s -> ADC s % 32, MUX select s / 32).
//
// The physics stays in Python (golden/): the testbench writes every cell's read current at
// 0.2 V, quantised to I_Q = 0.5 uA / 2**FRAC (golden.device), through the cfg port. The model
// only sums: a pulse's BL pattern is held at sh_sample (the S&H keeps the slot's currents while
// the next pulse runs); a conversion round of bank b, select s gives, for each ADC a,
//     code = min((sum_j cur[a + 32 s][j] * held[b][j] + 2**(shift-1)) >> shift, 2**CODE_BITS - 1)
// one cycle after adc_start: the golden ADC (floor(I / LSB + 1/2), clipped) with LSB = 2**shift I_Q.

module pe_model #(
    parameter ROWS = 128, BLS = 16, NADC = 32, CODE_BITS = 8, CUR_BITS = 18
) (
    input  wire                       clk,
    input  wire [BLS-1:0]             bl,
    input  wire                       sh_sample,
    input  wire                       sh_bank,
    input  wire                       adc_start,
    input  wire                       adc_bank,
    input  wire [1:0]                 adc_sel,
    input  wire [4:0]                 adc_shift,
    output reg                        adc_valid,
    output reg  [NADC*CODE_BITS-1:0]  adc_codes,
    input  wire                       cfg_we,
    input  wire [15:0]                cfg_addr,    // row * BLS + bl
    input  wire [CUR_BITS-1:0]        cfg_data
);
    reg [CUR_BITS-1:0] cur [0:ROWS*BLS-1];
    reg [BLS-1:0] held [0:1];
    integer a, j, row;
    reg [CUR_BITS+4:0] sum;
    reg [CUR_BITS+4:0] code;
    initial begin
        for (a = 0; a < ROWS*BLS; a = a + 1) cur[a] = 0;
        held[0] = 0; held[1] = 0; adc_valid = 0; adc_codes = 0;
    end
    always @(posedge clk) begin
        if (cfg_we) cur[cfg_addr[$clog2(ROWS*BLS)-1:0]] <= cfg_data;
        if (sh_sample) held[sh_bank] <= bl;
        adc_valid <= adc_start;
        if (adc_start) begin
            for (a = 0; a < NADC; a = a + 1) begin
                row = a + NADC * adc_sel;
                sum = 0;
                for (j = 0; j < BLS; j = j + 1)
                    if (held[adc_bank][j]) sum = sum + cur[row*BLS + j];
                code = (adc_shift == 0) ? sum : ((sum + ({{(CUR_BITS+4){1'b0}}, 1'b1} << (adc_shift - 1))) >> adc_shift);
                if (code > (1 << CODE_BITS) - 1) code = (1 << CODE_BITS) - 1;
                adc_codes[a*CODE_BITS +: CODE_BITS] <= code[CODE_BITS-1:0];
            end
        end
    end
endmodule
