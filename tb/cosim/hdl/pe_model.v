// Simulation-only behavioural model of one PE board slot: a 128 x 16 1T1R array behind two
// sample-and-hold banks and 32 ADCs shared 4:1 (SL s -> ADC s % 32, MUX select s / 32).
//
// The physics stays in Python (golden/): the testbench writes every cell's read current at
// 0.2 V, quantised to I_Q = 0.5 uA / 2**FRAC (golden.device), through the cfg port. The model
// only sums: a pulse's BL pattern is held at sh_sample (the S&H keeps the slot's currents while
// the next pulse runs); a conversion round of bank b, select s gives, for each ADC a,
//     code = min((sum_j cur[a + 32 s][j] * held[b][j] + 2**(shift-1)) >> shift, 2**CODE_BITS - 1)
// one cycle after adc_start: the golden ADC (floor(I / LSB + 1/2), clipped) with LSB = 2**shift I_Q.
//
// Transposed read (rtl/pe_board.py, transposed=True; golden/transposed_read.py): at bl_sample the
// rows enabled on sl_drive are the pulsed SLs; one cycle later, for each BL j (one BL-side ADC each),
//     bl_code[j] = min((sum_r cur[r][j] * sl_drive[r] + 2**(bl_shift-1)) >> bl_shift, 2**BL_CODE_BITS - 1)
// with bl_valid: the same cell currents, the golden ADC rounding with LSB = 2**bl_shift I_Q.

module pe_model #(
    parameter ROWS = 128, BLS = 16, NADC = 32, CODE_BITS = 8, CUR_BITS = 18, BL_CODE_BITS = 8
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
    input  wire [ROWS-1:0]            sl_drive,
    input  wire                       bl_sample,
    input  wire [4:0]                 bl_shift,
    output reg                        bl_valid,
    output reg  [BLS*BL_CODE_BITS-1:0] bl_codes,
    input  wire                       cfg_we,
    input  wire [15:0]                cfg_addr,    // row * BLS + bl
    input  wire [CUR_BITS-1:0]        cfg_data
);
    // For speed the sums come from per-row lookup tables, one per half of the BLs: lut[row][h][pat]
    // = sum of the row's currents on the BLs of half h selected by pat. A conversion of a row is then
    // two lookups instead of BLS conditional adds; a cell write updates the 2**HB entries that
    // contain its BL (with the difference to the old current, modulo 2**SUM_BITS: sums are >= 0).
    localparam HB = BLS / 2;
    localparam SUM_BITS = CUR_BITS + 5;
    localparam AW = $clog2(ROWS * BLS);
    reg [CUR_BITS-1:0] cur [0:ROWS*BLS-1];
    reg [SUM_BITS-1:0] lut [0:ROWS*2*(1<<HB)-1];
    reg [BLS-1:0] held [0:1];
    integer a, k, row, half, bit_;
    reg [SUM_BITS-1:0] sum, delta;
    reg [SUM_BITS-1:0] code;
    reg [BLS-1:0] pat;
    localparam TSUM_BITS = CUR_BITS + $clog2(ROWS) + 1;
    reg [TSUM_BITS-1:0] tsum, tcode;
    integer j, r;
    initial begin
        if (BLS % 2 != 0 || HB > 10) $fatal(1, "pe_model: BLS must be even and <= 20");
        for (a = 0; a < ROWS*BLS; a = a + 1) cur[a] = 0;
        for (a = 0; a < ROWS*2*(1<<HB); a = a + 1) lut[a] = 0;
        held[0] = 0; held[1] = 0; adc_valid = 0; adc_codes = 0;
        bl_valid = 0; bl_codes = 0;
    end
    always @(posedge clk) begin
        if (cfg_we) begin
            row = cfg_addr[AW-1:0] / BLS;
            half = (cfg_addr[AW-1:0] % BLS) / HB;
            bit_ = (cfg_addr[AW-1:0] % BLS) % HB;
            delta = {{(SUM_BITS-CUR_BITS){1'b0}}, cfg_data} - {{(SUM_BITS-CUR_BITS){1'b0}}, cur[cfg_addr[AW-1:0]]};
            for (k = 0; k < (1 << HB); k = k + 1)
                if ((k >> bit_) & 1) lut[(row * 2 + half) * (1 << HB) + k] = lut[(row * 2 + half) * (1 << HB) + k] + delta;
            cur[cfg_addr[AW-1:0]] <= cfg_data;
        end
        if (sh_sample) held[sh_bank] <= bl;
        adc_valid <= adc_start;
        if (adc_start) begin
            pat = held[adc_bank];
            for (a = 0; a < NADC; a = a + 1) begin
                row = a + NADC * adc_sel;
                sum = lut[(row * 2) * (1 << HB) + pat[HB-1:0]] + lut[(row * 2 + 1) * (1 << HB) + pat[BLS-1:HB]];
                code = (adc_shift == 0) ? sum : ((sum + ({{(SUM_BITS-1){1'b0}}, 1'b1} << (adc_shift - 1))) >> adc_shift);
                if (code > (1 << CODE_BITS) - 1) code = (1 << CODE_BITS) - 1;
                adc_codes[a*CODE_BITS +: CODE_BITS] <= code[CODE_BITS-1:0];
            end
        end
        bl_valid <= bl_sample;
        if (bl_sample) begin
            for (j = 0; j < BLS; j = j + 1) begin
                tsum = 0;
                for (r = 0; r < ROWS; r = r + 1)
                    if (sl_drive[r]) tsum = tsum + {{(TSUM_BITS-CUR_BITS){1'b0}}, cur[r * BLS + j]};
                tcode = (bl_shift == 0) ? tsum : ((tsum + ({{(TSUM_BITS-1){1'b0}}, 1'b1} << (bl_shift - 1))) >> bl_shift);
                if (tcode > (1 << BL_CODE_BITS) - 1) tcode = (1 << BL_CODE_BITS) - 1;
                bl_codes[j*BL_CODE_BITS +: BL_CODE_BITS] <= tcode[BL_CODE_BITS-1:0];
            end
        end
    end
endmodule
